//! Class labels of the built-in datasets, as model-card classes.

use anyhow::{Context, Result, ensure};
use kana_inference::card::Class;

/// The 49 Kuzushiji-49 classes in label order (index, codepoint, character).
pub const K49_CLASSMAP: &str = include_str!("../../../fixtures/k49/k49_classmap.csv");

pub const FASHION_MNIST: [&str; 10] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
];

pub fn fashion_mnist() -> Vec<Class> {
    FASHION_MNIST
        .iter()
        .enumerate()
        .map(|(index, label)| Class { index, label: label.to_string(), codepoint: None })
        .collect()
}

pub fn k49() -> Vec<Class> {
    parse_classmap(K49_CLASSMAP).expect("the embedded K49 class map is valid")
}

/// Parses a class map in the K49 format: header `index,codepoint,char`, then one row per class
/// in index order.
pub fn parse_classmap(csv: &str) -> Result<Vec<Class>> {
    let mut classes = Vec::new();
    for (line_no, line) in csv.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut cols = line.splitn(3, ',');
        let (Some(index), Some(codepoint), Some(label)) = (cols.next(), cols.next(), cols.next())
        else {
            anyhow::bail!("line {}: expected index,codepoint,char", line_no + 1);
        };
        let index: usize = index.parse().with_context(|| format!("line {}: bad index", line_no + 1))?;
        ensure!(index == classes.len(), "line {}: index {index} out of order", line_no + 1);
        classes.push(Class { index, label: label.to_string(), codepoint: Some(codepoint.to_string()) });
    }
    ensure!(!classes.is_empty(), "class map has no classes");
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k49_has_49_hiragana_in_order() {
        let k = k49();
        assert_eq!(k.len(), 49);
        assert_eq!(k[0].label, "あ");
        assert_eq!(k[0].codepoint.as_deref(), Some("U+3042"));
        assert_eq!(k[48].label, "ゝ");
        for c in &k {
            let cp = u32::from_str_radix(&c.codepoint.as_ref().unwrap()[2..], 16).unwrap();
            assert_eq!(c.label.chars().next().unwrap() as u32, cp);
        }
    }

    #[test]
    fn rejects_out_of_order_rows() {
        assert!(parse_classmap("index,codepoint,char\n1,U+3042,あ\n").is_err());
    }
}
