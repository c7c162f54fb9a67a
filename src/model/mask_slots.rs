//! The m mask slots of each row of a masked-LM batch, on the device, with what their checks need
//! known on the host: a forward pass checks positions against the rows' lengths and targets
//! against the vocabulary without reading the device.

use crate::device;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

const OP: &str = "mask slots";

/// Positions, targets and the real-slot mask, `[r, m]` each (u32, u32, u8), on one device.
#[derive(Clone, Debug)]
pub struct MaskSlots {
    positions: Tensor,
    targets: Tensor,
    mask: Tensor,
    /// The largest position of each row (padding slots included: they are read too).
    max_position: Vec<u32>,
    max_target: u32,
    /// Real slots (mask 1) in all.
    count: usize,
}

impl MaskSlots {
    /// `r = positions.len() / m` rows of `m` slots, row-major: positions (each inside its row),
    /// target ids and the mask (1 = a real mask, 0 = padding of the mask list), uploaded to
    /// `device` (one upload each).
    pub fn new(
        positions: Vec<u32>,
        targets: Vec<u32>,
        mask: Vec<u8>,
        m: usize,
        device: &Device,
    ) -> Result<Self> {
        let n = positions.len();
        if m == 0 || n == 0 || !n.is_multiple_of(m) || targets.len() != n || mask.len() != n {
            return Err(Error::bad_input(
                OP,
                "positions",
                format!(
                    "{n} positions, {} targets and {} mask entries must make rows of m = {m} ≥ 1 slots",
                    targets.len(),
                    mask.len()
                ),
            ));
        }
        if let Some(v) = mask.iter().find(|&&v| v > 1) {
            return Err(Error::bad_input(
                OP,
                "token_mask",
                format!("holds {v}; entries must be 0 or 1"),
            ));
        }
        let r = n / m;
        Ok(MaskSlots {
            max_position: positions
                .chunks(m)
                .map(|row| row.iter().copied().max().unwrap_or(0))
                .collect(),
            max_target: targets.iter().copied().max().unwrap_or(0),
            count: mask.iter().map(|&v| usize::from(v)).sum(),
            positions: device::upload(positions, (r, m), device)?,
            targets: device::upload(targets, (r, m), device)?,
            mask: device::upload(mask, (r, m), device)?,
        })
    }

    /// The same slots for each row repeated `k` times in place (row i becomes rows i·k..i·k+k),
    /// as every candidate row of a query has its masks at the same positions. No transfer.
    pub fn repeat_rows(&self, k: usize) -> Result<Self> {
        let (r, m) = self.positions.dims2()?;
        let tile = |t: &Tensor| -> Result<Tensor> {
            Ok(t.unsqueeze(1)?.repeat((1, k, 1))?.reshape((r * k, m))?)
        };
        Ok(MaskSlots {
            positions: tile(&self.positions)?,
            targets: tile(&self.targets)?,
            mask: tile(&self.mask)?,
            max_position: self
                .max_position
                .iter()
                .flat_map(|&p| std::iter::repeat_n(p, k))
                .collect(),
            max_target: self.max_target,
            count: self.count * k,
        })
    }

    /// Rows and slots per row.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.positions.dims();
        (d[0], d[1])
    }

    /// `[r, m]` u32 positions.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }

    /// `[r, m]` u32 target ids.
    pub fn targets(&self) -> &Tensor {
        &self.targets
    }

    /// `[r, m]` u8, 1 = a real mask.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The real slots in all.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The largest position of each row.
    pub fn max_positions(&self) -> &[u32] {
        &self.max_position
    }

    /// The largest target id.
    pub fn max_target(&self) -> u32 {
        self.max_target
    }
}
