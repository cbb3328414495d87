//! Writes a stand-in model (reference-size K49 CNN with random, untrained weights) and its card:
//! `cargo run -p kana-inference --features testing --example make-test-model -- <dir> [name] [--nnef]`
//! For tests, benches and trying the API before the trainer's real models land; never commit its
//! output to `models/`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nnef = args.iter().any(|a| a == "--nnef");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let dir = positional.first().map(|s| s.as_str()).unwrap_or("target/test-models");
    let name = positional.get(1).map(|s| s.as_str()).unwrap_or("cnn");
    let card = kana_inference::testing::write_reference_cnn(std::path::Path::new(dir), name, 42, nnef)?;
    println!("wrote {dir}/{}.card.json ({} classes, nnef: {nnef})", card.name, card.classes.len());
    Ok(())
}
