//! REALM's objective over retrieved documents: p(z|x) = softmax of the relevance scores
//! (`doc_softmax`), and the marginal log-likelihood log Σ_z p(z|x) p(y|z, x) per masked token
//! (`marginal_log_likelihood`), with its gradient, which reaches the retriever's scores.
//!
//! ```sh
//! cargo run --release --example marginal_likelihood
//! ```

use candle_core::{Device, Tensor, Var};
use realm::ops::{doc_softmax, marginal_log_likelihood};

fn main() -> realm::Result<()> {
    let dev = Device::Cpu;
    // One example, k = 4 retrieved documents (the last one absent: -inf), m = 2 masked tokens.
    let doc_logits = Var::new(&[[2.0f32, 1.0, 0.5, f32::NEG_INFINITY]], &dev)?;
    // log p(y_j | z, x) of each masked token j under each document z: document 0 knows the
    // answer, the others do not.
    let cond_logprob = Tensor::new(
        &[[[-0.1f32, -0.2], [-4.0, -5.0], [-6.0, -3.0], [0.0, 0.0]]],
        &dev,
    )?;

    let p = doc_softmax(doc_logits.as_tensor())?;
    println!("p(z|x)               = {:.4?}", p.to_vec2::<f32>()?);
    let mll = marginal_log_likelihood(doc_logits.as_tensor(), &cond_logprob)?;
    println!("log p(y_j|x)         = {:.4?}", mll.to_vec2::<f32>()?);

    // The loss is the negative mean over masked tokens; its gradient raises the score of the
    // document that helps and lowers the others (the absent one gets none).
    let loss = mll.mean_all()?.neg()?;
    let grads = loss.backward()?;
    let g = grads
        .get(doc_logits.as_tensor())
        .expect("doc_logits has a gradient");
    println!("d loss / d logits    = {:.4?}", g.to_vec2::<f32>()?);
    Ok(())
}
