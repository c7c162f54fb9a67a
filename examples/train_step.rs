//! One training step from Rust: the Inverse Cloze Task loss of a small retriever on a batch of
//! the embedded demo corpus (a sentence as the query, the rest of its block as the positive
//! context, the other blocks of the batch as negatives), its gradients, clipping and one AdamW
//! update; the loss on the same batch before and after. `realm ict` runs this loop with
//! checkpoints, metrics and held-out recall (`realm::train::ict::run_ict`).
//!
//! ```sh
//! cargo run --release --example train_step
//! ```

use candle_core::{Device, Var};
use realm::data::{ict_example, IctExample};
use realm::index::build::corpus_blocks;
use realm::model::{BertConfig, BertTokenizer, Mode, Retriever, RetrieverConfig, TowerPooling};
use realm::train::ict::{ict_loss, IctConfig};
use realm::train::models::{ModelInit, Origin};
use realm::train::optim::{clip_factor, global_grad_norm};
use realm::train::{step_rng, AdamW, AdamWConfig};

fn main() -> realm::Result<()> {
    let dev = Device::Cpu;
    let work = std::env::temp_dir().join(format!("realm-example-step-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let (corpus, vocab) = (work.join("docs.jsonl"), work.join("vocab.txt"));
    let docs: Vec<&str> = realm::data::demo::DOCS.lines().take(64).collect();
    std::fs::write(&corpus, docs.join("\n") + "\n")?;
    std::fs::write(&vocab, realm::data::demo::VOCAB)?;

    let tok = BertTokenizer::from_vocab(&vocab, true)?;
    let mut bert = BertConfig::new(64, 2, 2);
    bert.vocab_size = tok.vocab_size();
    // Mean pooling: an untrained [CLS] pooler gives nearly the same vector for every input, so a
    // retriever from scratch learns far faster from the mean of the hidden states.
    let shape = RetrieverConfig {
        pooling: TowerPooling::Mean,
        ..RetrieverConfig::default()
    };
    let retriever = Retriever::new_random(&bert, &shape, 0, &dev)?;

    // The stage's configuration supplies the input lengths.
    let init = ModelInit::Origin(Origin::Scratch {
        config: bert,
        vocab,
        lowercase: true,
    });
    let cfg = IctConfig {
        query_len: 48,
        doc_len: 160,
        ..IctConfig::new(init, corpus.clone())
    };
    let blocks = corpus_blocks(&corpus, &tok, 128, false)?.blocks;
    let (seed, step) = (7, 0);
    let mut rng = step_rng(seed, 1, step);
    let batch: Vec<IctExample> = blocks
        .iter()
        .filter_map(|b| ict_example(b, 0.9, &mut rng))
        .take(16)
        .collect();

    let (before, _) = ict_loss(&retriever, &tok, &batch, &cfg, Mode::Eval, &dev)?;
    // Training mode draws dropout masks from (seed, step), so a step is reproducible.
    let (loss, tokens) = ict_loss(
        &retriever,
        &tok,
        &batch,
        &cfg,
        Mode::Train { seed, step },
        &dev,
    )?;
    let grads = loss.backward()?;
    let vars: Vec<Var> = retriever.vars().into_iter().map(|(_, v)| v).collect();
    let norm = global_grad_norm(&grads, &vars)?;
    let mut optimizer = AdamW::new(retriever.vars(), AdamWConfig::default())?;
    optimizer.step(&grads, 1e-3, clip_factor(norm, 1.0)?)?;
    let (after, _) = ict_loss(&retriever, &tok, &batch, &cfg, Mode::Eval, &dev)?;

    let scalar = |t: candle_core::Tensor| t.to_scalar::<f32>();
    println!(
        "{} examples, {tokens} wordpieces; gradient norm {norm:.3} (clipped to 1)",
        batch.len()
    );
    println!(
        "ICT loss {:.4} -> {:.4} after one step (chance: ln {} = {:.4})",
        scalar(before)?,
        scalar(after)?,
        batch.len(),
        (batch.len() as f32).ln()
    );
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
