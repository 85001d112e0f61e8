//! The Reed-Solomon codec (reed-solomon-erasure, GF(2^8), SIMD-accelerated).
//!
//! Systematic: the first k shards are the data itself, so a healthy read
//! concatenates them without decoding.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;

use reed_solomon_erasure::galois_8::ReedSolomon;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("invalid code {k}+{m}: {reason}")]
    InvalidCode { k: u8, m: u8, reason: String },
    #[error("cannot reconstruct: {present} of {k} shards needed are present")]
    TooFewShards { present: usize, k: usize },
    #[error("reed-solomon: {0}")]
    Codec(String),
}

/// Codecs are costly to build (matrix inversion); one per (k, m) is shared.
fn codec(k: u8, m: u8) -> Result<Arc<ReedSolomon>, ErasureError> {
    static CODECS: OnceLock<Mutex<HashMap<(u8, u8), Arc<ReedSolomon>>>> = OnceLock::new();
    let mut map = CODECS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(&(k, m)) {
        return Ok(c.clone());
    }
    if m == 0 {
        return Err(ErasureError::InvalidCode { k, m, reason: "no parity".into() });
    }
    let c = Arc::new(ReedSolomon::new(k as usize, m as usize).map_err(|e| ErasureError::InvalidCode {
        k,
        m,
        reason: format!("{e:?}"),
    })?);
    map.insert((k, m), c.clone());
    Ok(c)
}

/// Splits `stripe` into k data shards of `shard_len` bytes (zero-padded) and
/// computes m parity shards.
pub fn encode(stripe: &[u8], k: u8, m: u8, shard_len: usize) -> Result<Vec<Vec<u8>>, ErasureError> {
    assert!(shard_len * k as usize >= stripe.len(), "shards too small for the stripe");
    let mut shards: Vec<Vec<u8>> = (0..k as usize + m as usize).map(|_| vec![0u8; shard_len]).collect();
    for (i, piece) in stripe.chunks(shard_len).enumerate() {
        shards[i][..piece.len()].copy_from_slice(piece);
    }
    if m > 0 {
        let (data, parity) = shards.split_at_mut(k as usize);
        codec(k, m)?.encode_sep(data, parity).map_err(|e| ErasureError::Codec(format!("{e:?}")))?;
    }
    Ok(shards)
}

/// Rebuilds the missing shards (`None`) of one stripe from any k present
/// ones. Every slot is `Some` afterwards.
pub fn reconstruct(shards: &mut [Option<Vec<u8>>], k: u8, m: u8) -> Result<(), ErasureError> {
    let present = shards.iter().filter(|s| s.is_some()).count();
    if present < k as usize {
        return Err(ErasureError::TooFewShards { present, k: k as usize });
    }
    if present == shards.len() {
        return Ok(());
    }
    codec(k, m)?.reconstruct(shards).map_err(|e| ErasureError::Codec(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systematic_and_reconstructs_any_m_losses() {
        let stripe: Vec<u8> = (0..10_001u32).map(|i| (i * 7 % 251) as u8).collect();
        for (k, m) in [(2u8, 1u8), (3, 2), (4, 2)] {
            let shard_len = stripe.len().div_ceil(k as usize);
            let shards = encode(&stripe, k, m, shard_len).unwrap();
            let data: Vec<u8> = shards[..k as usize].concat();
            assert_eq!(&data[..stripe.len()], &stripe[..], "data shards are the stripe");
            // Lose every combination of m shards (first m, last m, spread).
            for lost in [
                (0..m as usize).collect::<Vec<_>>(),
                (k as usize..(k + m) as usize).collect(),
                vec![0, (k + m - 1) as usize],
            ] {
                let lost: Vec<usize> = lost.into_iter().take(m as usize).collect();
                let mut opt: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                for &l in &lost {
                    opt[l] = None;
                }
                reconstruct(&mut opt, k, m).unwrap();
                let rebuilt: Vec<Vec<u8>> = opt.into_iter().map(Option::unwrap).collect();
                assert_eq!(rebuilt, shards, "k={k} m={m} lost {lost:?}");
            }
        }
    }

    #[test]
    fn too_many_losses_is_an_error_not_garbage() {
        let shards = encode(b"abcdef", 2, 1, 3).unwrap();
        let mut opt = vec![Some(shards[0].clone()), None, None];
        assert!(matches!(reconstruct(&mut opt, 2, 1), Err(ErasureError::TooFewShards { present: 1, k: 2 })));
    }
}
