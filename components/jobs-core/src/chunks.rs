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
}
