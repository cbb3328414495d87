//! Class labels of the built-in datasets, as model-card classes.

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
    kana_inference::card::classes_from_csv(K49_CLASSMAP).expect("the embedded K49 class map is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k49_has_49_hiragana_and_fashion_mnist_10_classes() {
        let k = k49();
        assert_eq!((k.len(), k[0].label.as_str(), k[48].label.as_str()), (49, "あ", "ゝ"));
        assert_eq!(fashion_mnist().len(), 10);
    }
}
