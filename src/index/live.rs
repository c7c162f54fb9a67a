//! Retrieval during training: the corpus side ([`Knowledge`]: blocks, their documents, title
//! wordpieces), the search itself (exact MIPS over the possibly stale index, the example's own
//! source document excluded), and the asynchronous refresh of the index ([`Refresher`]).
//!
//! A refresh embeds the corpus with a snapshot of the document tower on a background thread,
//! inside its own bounded rayon pool on the CPU so that training keeps the other cores (both in
//! the device's execution mode: on `emulate`, the emulated kernels), and is
//! swapped in when ready ([`RefreshPolicy::swap_after`] = None) or, for bit-reproducible runs,
//! exactly `swap_after` steps after it started (waiting then if it is late).

use super::build::{embed_blocks, EmbedBlocks};
use super::{weights_fingerprint, IndexSlot, Refresh, StoredIndex};
use crate::data::Block;
use crate::device::ComputeDevice;
use crate::dist::search::RankShard;
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::model::{BertTokenizer, Tower};
use crate::ops::mips::MipsIndex;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

const OP: &str = "retrieval";

/// The retrievable blocks of a run, fixed while it trains.
pub struct Knowledge {
    /// The blocks, in index row order (shared with refreshes).
    pub blocks: Arc<Vec<Block>>,
    /// Title wordpieces of each block.
    pub titles: Vec<Vec<u32>>,
    /// Index of each block's source document in `doc_ids` order.
    pub block_doc: Vec<u32>,
    /// Corpus document id → its index.
    pub doc_index: HashMap<String, u32>,
    /// The most blocks any document has (how many extra hits an exclusion can cost).
    pub max_blocks_per_doc: usize,
}

impl Knowledge {
    /// The knowledge of `blocks`: their titles tokenised and their documents numbered in order of
    /// first appearance; no blocks is an error.
    pub fn new(blocks: Vec<Block>, tokenizer: &BertTokenizer) -> Result<Self> {
        if blocks.is_empty() {
            return Err(Error::bad_input(OP, "corpus", "the corpus has no blocks"));
        }
        let titles: Vec<&str> = blocks.iter().map(|b| b.title.as_str()).collect();
        let titles = tokenizer.wordpieces(&titles)?;
        let mut doc_index = HashMap::new();
        let mut counts: Vec<usize> = Vec::new();
        let block_doc = blocks
            .iter()
            .map(|b| {
                let next = doc_index.len() as u32;
                let d = *doc_index.entry(b.doc_id.clone()).or_insert(next);
                if d as usize == counts.len() {
                    counts.push(0);
                }
                counts[d as usize] += 1;
                d
            })
            .collect();
        Ok(Knowledge {
            blocks: Arc::new(blocks),
            titles,
            block_doc,
            doc_index,
            max_blocks_per_doc: counts.into_iter().max().unwrap_or(1),
        })
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether there are no blocks (never, by [`Knowledge::new`]).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The document index of a corpus id, if the corpus has it.
    pub fn doc(&self, doc_id: &str) -> Option<u32> {
        self.doc_index.get(doc_id).copied()
    }

    /// An error unless `k` documents can be retrieved for every query, even one whose own
    /// document (with all its blocks) is excluded.
    pub fn check_k(&self, k: usize, excluding: bool) -> Result<()> {
        let available = if excluding {
            self.len().saturating_sub(self.max_blocks_per_doc)
        } else {
            self.len()
        };
        if k == 0 || k > available {
            return Err(Error::bad_input(
                OP,
                "k",
                format!(
                    "{k} documents to retrieve per query, but the corpus has {} blocks{}",
                    self.len(),
                    if excluding {
                        format!(
                            " and a query's own document (up to {} blocks) is excluded",
                            self.max_blocks_per_doc
                        )
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        Ok(())
    }

    /// The `k` best blocks of `index` for each of this rank's query embeddings (`[b, d]`, any
    /// float dtype; not differentiated), best first, skipping every block of `exclude[i]`'s
    /// document for query i. Every rank must call it (see [`RankShard::search_own`]).
    pub fn search(
        &self,
        queries: &Tensor,
        index: &RankShard,
        k: usize,
        exclude: &[Option<u32>],
    ) -> Result<Vec<Vec<u32>>> {
        let b = queries.dim(0)?;
        if exclude.len() != b {
            return Err(Error::bad_input(
                OP,
                "exclude",
                format!("{} exclusions for {b} queries", exclude.len()),
            ));
        }
        if index.len() != self.len() {
            return Err(Error::bad_input(
                OP,
                "index",
                format!(
                    "the index has {} rows but the corpus {} blocks",
                    index.len(),
                    self.len()
                ),
            ));
        }
        // Every rank asks for the same number: a rank whose part of the batch excludes nothing
        // still searches as deep as one that does.
        let excluding = index.dist().any(
            "index search: exclusions",
            exclude.iter().any(Option::is_some),
        )?;
        let extra = if excluding {
            self.max_blocks_per_doc
        } else {
            0
        };
        let wanted = (k + extra).min(self.len());
        let queries = queries.detach().to_device(index.local().device())?;
        let (_, ids) = index.search_own(&queries, wanted)?;
        let ids = crate::device::read_vec2::<u32>(&ids)?;
        Ok(ids
            .into_iter()
            .zip(exclude)
            .map(|(row, ex)| {
                row.into_iter()
                    .filter(|&id| id != u32::MAX && Some(self.block_doc[id as usize]) != *ex)
                    .take(k)
                    .collect()
            })
            .collect())
    }
}

/// The index being searched: the block embeddings (this rank's part of them), and the
/// fingerprint of the document-tower weights that produced them (what a saved index's manifest
/// records).
pub struct LiveIndex {
    /// The block embeddings, rank r holding rows [`Dist::shard`]`(n)`, ready for the search.
    pub mips: RankShard,
    /// Fingerprint of the document-tower weights that embedded the blocks.
    pub fingerprint: String,
}

impl LiveIndex {
    /// Embeds this rank's part of the blocks with `tower` (in batches, longest first, on the
    /// tower's device) into its part of an index searched on `device`.
    pub fn build(
        tower: &Tower,
        tok: &BertTokenizer,
        blocks: &[Block],
        options: &EmbedBlocks,
        device: &candle_core::Device,
        dist: &Dist,
    ) -> Result<Self> {
        dist.check_divisible("blocks", blocks.len())?;
        let part = dist.shard(blocks.len());
        let emb = embed_blocks(tower, tok, &blocks[part], options, tower.device())?;
        Ok(LiveIndex {
            mips: RankShard::new(dist, MipsIndex::new(&emb.to_device(device)?)?, blocks.len())?,
            fingerprint: weights_fingerprint(tower.vars())?,
        })
    }

    /// As a [`StoredIndex`] (on the CPU) built at `step`, for saving by the `writer` rank (the
    /// others get None). Every rank must call it: the parts are gathered.
    pub fn stored(
        &self,
        step: u64,
        model_path: &str,
        knowledge: &Knowledge,
        writer: bool,
    ) -> Result<Option<StoredIndex>> {
        let embeddings = self.mips.gather_all()?;
        writer
            .then(|| {
                StoredIndex::new(
                    &self.fingerprint,
                    model_path,
                    step,
                    knowledge.blocks.to_vec(),
                    embeddings,
                )
            })
            .transpose()
    }
}

/// When the index is rebuilt and swapped in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshPolicy {
    /// Start a refresh every this many steps (0: never; REALM: 500).
    pub every: u64,
    /// None: swap a refresh in as soon as it is ready (never waiting). Some(d): swap it in exactly
    /// d steps after it started, waiting if it is not done, so that runs (and resumed runs)
    /// are reproducible bit for bit.
    pub swap_after: Option<u64>,
    /// Threads of the refresh's rayon pool on the CPU.
    pub threads: usize,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            every: 500,
            swap_after: None,
            threads: 1,
        }
    }
}

/// What a finished refresh reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Swapped {
    /// The step of the weights it was built from.
    pub step: u64,
    /// Its wall time, seconds.
    pub seconds: f64,
}

/// Starts refreshes on schedule and swaps them into the slot.
pub struct Refresher {
    policy: RefreshPolicy,
    pending: Option<Refresh<LiveIndex>>,
    pending_step: u64,
    /// The weights the running refresh embeds with (kept so that a checkpoint can record them).
    snapshot: Option<Arc<Tower>>,
    pool: Arc<rayon::ThreadPool>,
    tokenizer: Arc<BertTokenizer>,
    blocks: Arc<Vec<Block>>,
    options: EmbedBlocks,
    /// Where a refresh embeds: [`ComputeDevice::refresh_device`].
    device: ComputeDevice,
    /// Where the index it builds is searched: the training device.
    index_device: candle_core::Device,
    /// The ranks of the run: each refreshes its part of the index.
    dist: Dist,
}

impl Refresher {
    /// A refresher with no refresh running; its pool has `policy.threads` threads in `device`'s
    /// execution mode. Each rank of `dist` refreshes its part of the index.
    pub fn new(
        policy: RefreshPolicy,
        tokenizer: Arc<BertTokenizer>,
        knowledge: &Knowledge,
        options: EmbedBlocks,
        device: &ComputeDevice,
        dist: &Dist,
    ) -> Result<Self> {
        // Its workers compute in the device's execution mode (a rayon worker never entered the
        // mode of the thread that installs work on it).
        let pool = device.thread_pool(policy.threads, "index-refresh")?;
        Ok(Refresher {
            policy,
            pending: None,
            pending_step: 0,
            snapshot: None,
            pool: Arc::new(pool),
            tokenizer,
            blocks: knowledge.blocks.clone(),
            options,
            device: device.refresh_device()?,
            index_device: device.device.clone(),
            dist: dist.clone(),
        })
    }

    /// Whether a refresh is running.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The running refresh (not yet swapped in): the step of its weights and the snapshot it
    /// embeds with.
    pub fn running(&self) -> Option<(u64, &Tower)> {
        self.snapshot.as_deref().map(|t| (self.pending_step, t))
    }

    /// Starts a refresh from a snapshot of `tower` if one is due after `step` steps and none is
    /// running.
    pub fn maybe_start(&mut self, step: u64, tower: &Tower) -> Result<bool> {
        let due = self.policy.every > 0 && step > 0 && step.is_multiple_of(self.policy.every);
        if !due || self.pending.is_some() {
            return Ok(false);
        }
        self.start(step, tower)?;
        Ok(true)
    }

    /// Starts a refresh from a snapshot of `tower` (the weights after `step` steps).
    pub fn start(&mut self, step: u64, tower: &Tower) -> Result<()> {
        let snapshot = self.snapshot_of(tower)?;
        self.spawn(step, snapshot)
    }

    /// Starts again, in a resumed run, the refresh that was running when its checkpoint was
    /// written: `snapshot` holds the weights after `step` steps ([`load_snapshot`]). It is
    /// swapped in by the same policy as if it had never stopped.
    pub fn restart(&mut self, step: u64, snapshot: Tower) -> Result<()> {
        let snapshot = self.snapshot_of(&snapshot)?;
        self.spawn(step, snapshot)
    }

    /// A copy of `tower` on the refresh device, complete before this returns. On a GPU the
    /// training stream and the refresh stream are not ordered with each other (cudarc orders
    /// streams only inside a context in its multi-stream mode, and the training device's is
    /// not), so the copies wait for the queued update, and the next update for the copies: one
    /// drain of each stream per refresh. Called on the training thread, whose stream it drains.
    fn snapshot_of(&self, tower: &Tower) -> Result<Tower> {
        self.index_device.synchronize()?;
        let snapshot = tower.snapshot_on(&self.device.device)?;
        self.device.synchronize()?;
        Ok(snapshot)
    }

    fn spawn(&mut self, step: u64, snapshot: Tower) -> Result<()> {
        let snapshot = Arc::new(snapshot);
        let (pool, tok, blocks) = (
            self.pool.clone(),
            self.tokenizer.clone(),
            self.blocks.clone(),
        );
        let (options, device, index_device, weights, dist) = (
            self.options.clone(),
            self.device.clone(),
            self.index_device.clone(),
            snapshot.clone(),
            self.dist.clone(),
        );
        self.pending = Some(Refresh::spawn(step, move || {
            let _exec = device.enter()?;
            pool.install(|| {
                let index =
                    LiveIndex::build(&weights, &tok, &blocks, &options, &index_device, &dist)?;
                // The index was copied to the training device on this thread's stream (candle's
                // device issues on the calling thread's per-thread stream), which the training
                // thread's stream is not ordered with: complete before it is searched there.
                index_device.synchronize()?;
                Ok(index)
            })
        })?);
        self.pending_step = step;
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Swaps a finished refresh into `slot` before step `step` runs: without waiting, unless the
    /// policy fixes the swap step and it has come.
    pub fn poll(&mut self, step: u64, slot: &IndexSlot<LiveIndex>) -> Result<Option<Swapped>> {
        let Some(refresh) = &mut self.pending else {
            return Ok(None);
        };
        let done = match self.policy.swap_after {
            None => refresh.try_finish(),
            Some(d) if step >= self.pending_step + d => {
                return self.finish(slot);
            }
            Some(_) => return Ok(None),
        };
        match done {
            None => Ok(None),
            Some(result) => {
                self.pending = None;
                self.snapshot = None;
                let r = result?;
                slot.swap(r.index, r.step);
                Ok(Some(Swapped {
                    step: r.step,
                    seconds: r.build_time.as_secs_f64(),
                }))
            }
        }
    }

    /// Waits for a running refresh and swaps it in (at the end of training, so that the last
    /// checkpoint holds the newest index).
    pub fn finish(&mut self, slot: &IndexSlot<LiveIndex>) -> Result<Option<Swapped>> {
        let Some(refresh) = self.pending.take() else {
            return Ok(None);
        };
        self.snapshot = None;
        let r = refresh.finish()?;
        slot.swap(r.index, r.step);
        Ok(Some(Swapped {
            step: r.step,
            seconds: r.build_time.as_secs_f64(),
        }))
    }
}

/// The file of a refresh snapshot inside its folder.
const SNAPSHOT: &str = "tower.safetensors";

/// Writes the weights of a refresh snapshot into `dir` (inside a checkpoint being assembled).
pub fn save_snapshot(tower: &Tower, dir: &std::path::Path) -> Result<()> {
    let path = dir.join(SNAPSHOT);
    let tensors: Vec<(&str, Tensor)> = tower
        .vars()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_tensor().clone()))
        .collect();
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), None)
        .map_err(|e| Error::file(&path, e))?;
    crate::io::write_atomic(&path, |w| w.write_all(&bytes))
}

/// The refresh snapshot saved in `dir`, as a copy of `like` (the run's document tower, which has
/// the same shape) holding the saved weights.
pub fn load_snapshot(dir: &std::path::Path, like: &Tower) -> Result<Tower> {
    let path = dir.join(SNAPSHOT);
    let mut saved = candle_core::safetensors::load(&path, like.bert().device())
        .map_err(|e| Error::file(&path, format!("the running refresh's weights: {e}")))?;
    let copy = like.snapshot()?;
    let (mut missing, mut wrong_shape) = (Vec::new(), Vec::new());
    for (name, var) in copy.vars() {
        match saved.remove(name) {
            Some(t) if t.dims() == var.dims() && t.dtype() == var.dtype() => var.set(&t)?,
            Some(t) => wrong_shape.push(format!(
                "{name}: expected {:?} {:?}, found {:?} {:?}",
                var.dtype(),
                var.dims(),
                t.dtype(),
                t.dims()
            )),
            None => missing.push(name.clone()),
        }
    }
    let mut unexpected: Vec<String> = saved.into_keys().collect();
    if !(missing.is_empty() && wrong_shape.is_empty() && unexpected.is_empty()) {
        unexpected.sort();
        return Err(Error::Checkpoint {
            path,
            missing,
            unexpected,
            wrong_shape,
        });
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn block(doc: &str) -> Block {
        Block {
            doc_id: doc.into(),
            title: String::new(),
            tokens: vec![1],
            sentences: std::iter::once(0..1).collect(),
        }
    }

    fn knowledge(docs: &[&str]) -> Knowledge {
        let blocks: Vec<Block> = docs.iter().map(|d| block(d)).collect();
        let mut doc_index = HashMap::new();
        let block_doc = docs
            .iter()
            .map(|d| {
                let n = doc_index.len() as u32;
                *doc_index.entry(d.to_string()).or_insert(n)
            })
            .collect();
        Knowledge {
            titles: vec![Vec::new(); blocks.len()],
            blocks: Arc::new(blocks),
            block_doc,
            doc_index,
            max_blocks_per_doc: 2,
        }
    }

    #[test]
    fn search_skips_every_block_of_the_excluded_document() {
        // Blocks 0 and 1 belong to document "a"; the query points at them first.
        let k = knowledge(&["a", "a", "b", "c"]);
        let emb = Tensor::new(
            &[[4f32, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let index = RankShard::from_all(&Dist::local(), &emb, &Device::Cpu).unwrap();
        let q = Tensor::new(&[[1f32, 0.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        let hits = k.search(&q, &index, 2, &[Some(0), None]).unwrap();
        assert_eq!(hits, [vec![2, 3], vec![0, 1]]);
        assert!(k.check_k(2, true).is_ok());
        let msg = k.check_k(3, true).unwrap_err().to_string();
        assert!(msg.contains("excluded"), "{msg}");
        assert!(k.check_k(5, false).is_err());
        assert!(k.search(&q, &index, 2, &[None]).is_err());
    }

    #[test]
    fn ranks_that_exclude_and_ranks_that_do_not_search_together() {
        // The two queries of the test above, one on each of 2 ranks: rank 0 excludes "a", rank
        // 1 nothing, and each gets what one process gets for its query.
        let hits = crate::dist::tests::run_ranks(2, |dist| {
            let k = knowledge(&["a", "a", "b", "c"]);
            let emb = Tensor::new(
                &[[4f32, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]],
                &Device::Cpu,
            )
            .unwrap();
            let index = RankShard::from_all(&dist, &emb, &Device::Cpu).unwrap();
            let q = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
            let exclude = [Some(0), None][dist.rank()];
            k.search(&q, &index, 2, &[exclude]).unwrap()
        });
        assert_eq!(hits, [[vec![2, 3]], [vec![0, 1]]]);
    }

    /// The background refresh on an `emulate` device computes what the foreground does there:
    /// every attention of the document tower on the emulated kernels (counted by the launch
    /// seam in the device's execution mode), and the same embeddings bit for bit.
    #[cfg(feature = "emulate")]
    #[test]
    fn a_refresh_on_the_emulator_runs_the_emulated_kernels() {
        use crate::device::{ComputeDevice, DeviceSpec};
        use crate::model::{BertConfig, Retriever, RetrieverConfig};
        use candle_core::DType;

        let tok = Arc::new(
            BertTokenizer::from_vocab(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/vocab.txt"),
                true,
            )
            .unwrap(),
        );
        let mut bert = BertConfig::new(32, 2, 1);
        bert.vocab_size = tok.vocab_size();
        let rcfg = RetrieverConfig {
            proj_size: 16,
            ..RetrieverConfig::default()
        };
        let mut retriever = Retriever::new_random(&bert, &rcfg, 3, &Device::Cpu).unwrap();
        // The kernels take f16 or bf16.
        retriever.set_compute_dtype(DType::F16).unwrap();
        let blocks: Vec<Block> = (0..10u32)
            .map(|i| Block {
                doc_id: i.to_string(),
                title: String::new(),
                tokens: (0..12).map(|t| 1000 + (i * 7 + t) % 500).collect(),
                sentences: std::iter::once(0..12).collect(),
            })
            .collect();
        let knowledge = Knowledge::new(blocks, &tok).unwrap();
        let options = EmbedBlocks {
            batch: 4,
            max_len: 32,
            progress: None,
        };
        let tower = retriever.doc_tower();

        // The foreground: the calling thread in the device's mode.
        let foreground = ComputeDevice::resolve(DeviceSpec::Emulate).unwrap();
        let want = {
            let _mode = foreground.enter().unwrap();
            LiveIndex::build(
                tower,
                &tok,
                &knowledge.blocks,
                &options,
                &Device::Cpu,
                &Dist::local(),
            )
            .unwrap()
        };
        let launches = foreground.exec.launches();
        // 3 batches of up to 4 blocks; per layer the attention, two LayerNorms and the GELU, and
        // the embeddings' and the projection's LayerNorm.
        assert_eq!(launches, 3 * (2 * 4 + 2));

        let device = ComputeDevice::resolve(DeviceSpec::Emulate).unwrap();
        let policy = RefreshPolicy {
            every: 1,
            swap_after: None,
            threads: 2,
        };
        let mut refresher = Refresher::new(
            policy,
            tok.clone(),
            &knowledge,
            options,
            &device,
            &Dist::local(),
        )
        .unwrap();
        let bits = |index: &LiveIndex| -> Vec<u16> {
            let emb = index
                .mips
                .local()
                .embeddings()
                .unwrap()
                .flatten_all()
                .unwrap();
            emb.to_vec1::<half::f16>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let want_bits = bits(&want);
        let slot = IndexSlot::new(want, 0);
        refresher.start(1, tower).unwrap();
        refresher.finish(&slot).unwrap();
        assert_eq!(
            device.exec.launches(),
            launches,
            "the refresh's attention did not all run on the emulated kernels"
        );
        let got = slot.get();
        assert_eq!(got.step, 1);
        assert_eq!(
            bits(&got.index),
            want_bits,
            "the refresh computed other embeddings"
        );
    }
}
