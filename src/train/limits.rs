//! Range checks for the fields of a stage's configuration (`config.json`, flags): every value a
//! run later uses as a size, a count or an index is checked when the configuration is loaded, so
//! that a bad value is an error naming its field, never a panic or an unbounded allocation.

use crate::error::{Error, Result};
use crate::model::{BertConfig, RetrieverConfig};

/// Largest model trained from scratch, in parameters (BERT-large has 340 M): a bound against a
/// mistyped size in a configuration file, not a design limit.
pub const MAX_SCRATCH_PARAMETERS: u64 = 1 << 32;
/// Largest sequence, block or beam length a configuration may ask for.
pub const MAX_LEN: usize = 1 << 20;
/// Largest count of examples, queries or blocks a configuration may ask for.
pub const MAX_COUNT: usize = 1 << 40;

/// An error naming `op` and `field` unless `least ≤ value ≤ most`.
pub fn within(
    op: &'static str,
    field: &'static str,
    value: usize,
    least: usize,
    most: usize,
) -> Result<()> {
    if (least..=most).contains(&value) {
        return Ok(());
    }
    Err(Error::bad_input(
        op,
        field,
        format!("{value} must be between {least} and {most}"),
    ))
}

/// The retriever's shape, as a configuration may set it.
pub fn retriever(op: &'static str, cfg: &RetrieverConfig) -> Result<()> {
    cfg.validate()?;
    within(op, "retriever_proj_size", cfg.proj_size, 1, 1 << 16)
}

/// A from-scratch BERT's configuration: valid, and of at most [`MAX_SCRATCH_PARAMETERS`].
pub fn scratch_bert(op: &'static str, cfg: &BertConfig) -> Result<()> {
    cfg.validate()?;
    let (h, i) = (cfg.hidden_size as u128, cfg.intermediate_size as u128);
    let embeddings = (cfg.vocab_size as u128
        + cfg.max_position_embeddings as u128
        + cfg.type_vocab_size as u128)
        * h;
    let layers = cfg.num_hidden_layers as u128 * (4 * h * h + 2 * h * i);
    let parameters = embeddings + layers;
    if parameters > MAX_SCRATCH_PARAMETERS as u128 {
        return Err(Error::bad_input(
            op,
            "init",
            format!(
                "a BERT from scratch of about {parameters} parameters: at most {MAX_SCRATCH_PARAMETERS} \
                 (check its sizes)"
            ),
        ));
    }
    Ok(())
}

/// An error unless each `(field, length)` fits the model's `max_position_embeddings`.
pub fn fits_positions(
    op: &'static str,
    bert: &BertConfig,
    lens: &[(&'static str, usize)],
) -> Result<()> {
    for &(field, len) in lens {
        if len > bert.max_position_embeddings {
            return Err(Error::bad_input(
                op,
                field,
                format!(
                    "{len} wordpieces exceed the model's max_position_embeddings = {}",
                    bert.max_position_embeddings
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_range_are_errors_naming_the_field() {
        assert!(within("ict", "query_len", 3, 3, 10).is_ok());
        let msg = within("ict", "query_len", 2, 3, 10)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("query_len") && msg.contains("between 3 and 10"),
            "{msg}"
        );
        let mut bert = BertConfig::new(64, 2, 2);
        bert.vocab_size = 1000;
        assert!(scratch_bert("ict", &bert).is_ok());
        bert.intermediate_size = 1 << 40;
        let msg = scratch_bert("ict", &bert).unwrap_err().to_string();
        assert!(msg.contains("parameters"), "{msg}");
        let msg = fits_positions("ict", &BertConfig::new(64, 2, 2), &[("doc_len", 100_000)])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("doc_len") && msg.contains("max_position_embeddings"),
            "{msg}"
        );
    }
}
