//! Large values split across keys `{base}/0`, `{base}/1`, … so no single value exceeds what a
//! key-value backend accepts. The caller records the chunk count (in the job record, written
//! after the chunks, so a record never points at missing chunks).

use crate::kv::KeyValue;

pub async fn put(kv: &impl KeyValue, base: &str, data: &[u8], chunk_bytes: usize) -> anyhow::Result<u32> {
    let mut count = 0u32;
    for chunk in data.chunks(chunk_bytes.max(1)) {
        kv.set(&format!("{base}/{count}"), chunk).await?;
        count += 1;
    }
    Ok(count)
}

/// Appends `data` to a value of `len` bytes stored at `base` in chunks of `chunk_bytes`, rewriting
/// only its last, partial chunk; returns the new chunk count. Bytes past `len` (written by a run
/// that stopped before saving its record) are overwritten: the length the caller records is the truth.
pub async fn append(kv: &impl KeyValue, base: &str, len: usize, data: &[u8], chunk_bytes: usize) -> anyhow::Result<u32> {
    let size = chunk_bytes.max(1);
    let first = len / size;
    let mut tail = Vec::new();
    if !len.is_multiple_of(size) {
        let key = format!("{base}/{first}");
        tail = kv.get(&key).await?.ok_or_else(|| anyhow::anyhow!("chunk {key} is missing"))?;
        anyhow::ensure!(tail.len() >= len % size, "chunk {key} is shorter than recorded");
        tail.truncate(len % size);
    }
    tail.extend_from_slice(data);
    for (i, chunk) in tail.chunks(size).enumerate() {
        kv.set(&format!("{base}/{}", first + i), chunk).await?;
    }
    Ok((len + data.len()).div_ceil(size) as u32)
}

pub async fn get(kv: &impl KeyValue, base: &str, count: u32) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    for i in 0..count {
        let chunk = kv
            .get(&format!("{base}/{i}"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("chunk {base}/{i} is missing"))?;
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

pub async fn delete(kv: &impl KeyValue, base: &str, count: u32) -> anyhow::Result<()> {
    for i in 0..count {
        kv.delete(&format!("{base}/{i}")).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;
    use futures::executor::block_on;

    #[test]
    fn round_trips_across_chunk_boundaries() {
        let kv = MemoryKv::new();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        block_on(async {
            for size in [1, 7, 999, 1000, 4096] {
                let n = put(&kv, "b", &data, size).await.unwrap();
                assert_eq!(n as usize, data.len().div_ceil(size));
                assert_eq!(get(&kv, "b", n).await.unwrap(), data);
                delete(&kv, "b", n).await.unwrap();
                assert!(kv.is_empty());
            }
            assert_eq!(put(&kv, "e", &[], 10).await.unwrap(), 0);
            assert!(get(&kv, "missing", 2).await.is_err());
        });
    }

    #[test]
    fn appends_rewrite_only_the_tail_and_ignore_bytes_past_the_recorded_length() {
        let kv = MemoryKv::new();
        block_on(async {
            let mut len = 0;
            let mut want = Vec::new();
            for piece in [&b"abc"[..], b"", b"defghij", b"k", b"lmnopqrstu"] {
                let count = append(&kv, "b", len, piece, 4).await.unwrap();
                len += piece.len();
                want.extend_from_slice(piece);
                assert_eq!(count as usize, len.div_ceil(4));
                assert_eq!(get(&kv, "b", count).await.unwrap(), want);
            }
            // A run that appended but never recorded the new length: its bytes are overwritten.
            append(&kv, "b", len, b"LOST BYTES", 4).await.unwrap();
            let count = append(&kv, "b", len, b"vw", 4).await.unwrap();
            want.extend_from_slice(b"vw");
            assert_eq!(get(&kv, "b", count).await.unwrap(), want, "the tail chunk is rewritten whole");
        });
    }
}
