//! Zero-shot retrieval of a sentence encoder, as sentence-transformers uses it (mean pooling,
//! cosine over the full hidden width), against the views a 128-d retriever projection can keep
//! of it (`realm::model::projection`): the top principal directions of the corpus embeddings
//! (all blocks, or the sample a training stage fits to) and a random orthonormal view (what a
//! plain BERT folder gets in `realm index` / `realm eval`). Prints recall@1/@5/@20: the fraction
//! of questions with an answer string in one of the top blocks (as `realm eval` counts it).
//!
//! ```sh
//! cargo run --release --example encoder_retrieval -- ../shared/models/all-minilm-l6-v2 \
//!     corpus.jsonl questions.json 300
//! ```

use realm::data::{contains_answer, read_qa};
use realm::index::build::{corpus_blocks, doc_input_len};
use realm::model::projection::{
    basis_rows, orthonormal_basis, principal_basis, sum_zero_projection,
};
use realm::model::{
    doc_inputs, pool, query_inputs, span_text, BertModel, BertTokenizer, Mode, Pooling,
};
use realm::train::models::PROJECTION_FIT_BLOCKS;

/// REALM's block length, as `realm eval` cuts a corpus.
const BLOCK_LEN: usize = 288;
const QUERY_LEN: usize = 64;
const PROJ_SIZE: usize = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: encoder_retrieval MODEL_DIR CORPUS QUESTIONS [MAX_QUESTIONS]".into());
    }
    let dev = candle_core::Device::Cpu;
    let model_dir = std::path::Path::new(&args[1]);
    let tok = BertTokenizer::from_dir(model_dir)?;
    let bert = BertModel::load(model_dir, &dev)?;
    let h = bert.config().hidden_size;
    let blocks = corpus_blocks(std::path::Path::new(&args[2]), &tok, BLOCK_LEN, false)?.blocks;
    let mut questions = read_qa(std::path::Path::new(&args[3]))?;
    if let Some(n) = args.get(4) {
        questions.truncate(n.parse()?);
    }
    let doc_len = doc_input_len(bert.config().max_position_embeddings, BLOCK_LEN);

    let mut docs: Vec<f32> = Vec::with_capacity(blocks.len() * h);
    for chunk in blocks.chunks(32) {
        let titles = tok.wordpieces(&chunk.iter().map(|b| b.title.as_str()).collect::<Vec<_>>())?;
        let titles: Vec<&[u32]> = titles.iter().map(Vec::as_slice).collect();
        let bodies: Vec<&[u32]> = chunk.iter().map(|b| b.tokens.as_slice()).collect();
        let input = doc_inputs(&tok, &titles, &bodies, doc_len, &dev)?;
        let out = bert.forward(&input, Mode::Eval)?;
        docs.extend(
            pool(&out.last_hidden_state, input.lens().tensor(), Pooling::Mean)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    let mut queries: Vec<f32> = Vec::with_capacity(questions.len() * h);
    for chunk in questions.chunks(32) {
        let pieces = tok.wordpieces(
            &chunk
                .iter()
                .map(|q| q.question.as_str())
                .collect::<Vec<_>>(),
        )?;
        let pieces: Vec<&[u32]> = pieces.iter().map(Vec::as_slice).collect();
        let input = query_inputs(&tok, &pieces, QUERY_LEN, &dev)?;
        let out = bert.forward(&input, Mode::Eval)?;
        queries.extend(
            pool(&out.last_hidden_state, input.lens().tensor(), Pooling::Mean)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    let texts: Vec<String> = blocks
        .iter()
        .map(|b| span_text(&tok, &b.tokens))
        .collect::<Result<_, _>>()?;
    let golds: Vec<Vec<String>> = questions
        .iter()
        .map(|q| q.answers.iter().map(|a| a.text.clone()).collect())
        .collect();

    let n = blocks.len();
    let r = basis_rows(PROJ_SIZE, h);
    let sample = n.min(PROJECTION_FIT_BLOCKS);
    let sampled: Vec<f32> = (0..sample)
        .flat_map(|i| {
            let at = i * n / sample;
            docs[at * h..(at + 1) * h].to_vec()
        })
        .collect();
    let views: Vec<(String, Option<Vec<f32>>)> = vec![
        (format!("encoder: mean pooling, cosine over {h} dims"), None),
        (
            format!("principal {r} of all {n} blocks → {PROJ_SIZE}"),
            Some(sum_zero_projection(
                &principal_basis(&docs, n, h, r)?,
                h,
                PROJ_SIZE,
            )?),
        ),
        (
            format!("principal {r} of {sample} sampled blocks → {PROJ_SIZE} (training stages)"),
            Some(sum_zero_projection(
                &principal_basis(&sampled, sample, h, r)?,
                h,
                PROJ_SIZE,
            )?),
        ),
        (
            format!("random orthonormal {r} → {PROJ_SIZE} (plain folder: index, eval)"),
            Some(sum_zero_projection(
                &orthonormal_basis(r, h, 0)?,
                h,
                PROJ_SIZE,
            )?),
        ),
    ];
    println!(
        "{} questions, {n} blocks\n\n| view | recall@1 | recall@5 | recall@20 |\n|---|---:|---:|---:|",
        questions.len()
    );
    for (name, w) in views {
        let view = |x: &[f32]| -> Vec<Vec<f64>> {
            x.chunks(h)
                .map(|v| {
                    let y: Vec<f64> = match &w {
                        None => v.iter().map(|&a| f64::from(a)).collect(),
                        Some(w) => w
                            .chunks(h)
                            .map(|row| {
                                row.iter()
                                    .zip(v)
                                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                    .sum()
                            })
                            .collect(),
                    };
                    let norm = y.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                    y.iter().map(|a| a / norm).collect()
                })
                .collect()
        };
        let (d, q) = (view(&docs), view(&queries));
        let mut hits = [0usize; 3];
        for (qv, gold) in q.iter().zip(&golds) {
            let mut scored: Vec<(f64, usize)> = d
                .iter()
                .enumerate()
                .map(|(i, dv)| (qv.iter().zip(dv).map(|(a, b)| a * b).sum(), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (slot, k) in [1, 5, 20].into_iter().enumerate() {
                if scored
                    .iter()
                    .take(k)
                    .any(|&(_, i)| contains_answer(&texts[i], gold))
                {
                    hits[slot] += 1;
                }
            }
        }
        let rate = |c: usize| c as f64 / questions.len() as f64;
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} |",
            rate(hits[0]),
            rate(hits[1]),
            rate(hits[2])
        );
    }
    Ok(())
}
