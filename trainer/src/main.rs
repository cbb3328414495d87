//! `trainer`: see `trainer --help`.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    kana_trainer::model::cpu::keep_freed_memory();
    kana_trainer::cli::run(kana_trainer::cli::Cli::parse())
}
