//! Classification metrics from a confusion matrix: accuracy, balanced accuracy (mean per-class
//! recall, the K49 benchmark metric), macro precision / recall / F1 and a per-class report.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

/// counts[[true, predicted]].
#[derive(Clone, Debug, PartialEq)]
pub struct ConfusionMatrix {
    pub counts: Array2<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix { counts: Array2::zeros((classes, classes)) }
    }

    pub fn from_predictions(classes: usize, truth: &[u32], predicted: &[u32]) -> ConfusionMatrix {
        let mut cm = ConfusionMatrix::new(classes);
        cm.add(truth, predicted);
        cm
    }

    pub fn classes(&self) -> usize {
        self.counts.nrows()
    }

    pub fn add(&mut self, truth: &[u32], predicted: &[u32]) {
        assert_eq!(truth.len(), predicted.len(), "one prediction per label");
        for (&t, &p) in truth.iter().zip(predicted) {
            self.counts[[t as usize, p as usize]] += 1;
        }
    }

    /// Adds the argmax of each row of `logits` [B, classes] against `truth`.
    pub fn add_logits(&mut self, truth: &[u32], logits: ArrayView2<f32>) {
        let predicted: Vec<u32> = logits.outer_iter().map(|row| argmax(&row.to_vec()) as u32).collect();
        self.add(truth, &predicted);
    }

    pub fn total(&self) -> u64 {
        self.counts.sum()
    }

    /// Per-class precision, recall, F1 and support, and the summary metrics.
    pub fn report(&self) -> Report {
        let n = self.classes();
        let support = self.counts.sum_axis(Axis(1));
        let predicted = self.counts.sum_axis(Axis(0));
        let per_class: Vec<ClassReport> = (0..n)
            .map(|c| {
                let tp = self.counts[[c, c]] as f64;
                let precision = ratio(tp, predicted[c] as f64);
                let recall = ratio(tp, support[c] as f64);
                let f1 = ratio(2.0 * precision * recall, precision + recall);
                ClassReport { index: c, precision, recall, f1, support: support[c] }
            })
            .collect();
        // Classes absent from the evaluated set are left out of the macro averages, as in
        // scikit-learn's recall averaging over the labels present.
        let present: Vec<&ClassReport> = per_class.iter().filter(|c| c.support > 0).collect();
        let mean = |f: fn(&ClassReport) -> f64| ratio(present.iter().map(|c| f(c)).sum(), present.len() as f64);
        let correct: u64 = (0..n).map(|c| self.counts[[c, c]]).sum();
        Report {
            samples: self.total(),
            accuracy: ratio(correct as f64, self.total() as f64),
            balanced_accuracy: mean(|c| c.recall),
            macro_precision: mean(|c| c.precision),
            macro_recall: mean(|c| c.recall),
            macro_f1: mean(|c| c.f1),
            per_class,
        }
    }

    /// CSV with a header row of predicted labels and one row per true label.
    pub fn to_csv(&self, labels: &[String]) -> String {
        let mut out = String::from("true\\predicted");
        for l in labels {
            out.push(',');
            out.push_str(&csv_field(l));
        }
        out.push('\n');
        for (t, row) in self.counts.outer_iter().enumerate() {
            out.push_str(&csv_field(labels.get(t).map_or("?", |s| s.as_str())));
            for v in row {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        out
    }
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
        .0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub index: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub samples: u64,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassReport>,
}

impl Report {
    /// The summary as the model card stores it.
    pub fn card_metrics(&self, dataset: &str, split: &str) -> kana_inference::card::Metrics {
        kana_inference::card::Metrics {
            dataset: dataset.into(),
            split: split.into(),
            samples: self.samples as usize,
            accuracy: self.accuracy,
            balanced_accuracy: self.balanced_accuracy,
            macro_precision: self.macro_precision,
            macro_recall: self.macro_recall,
            macro_f1: self.macro_f1,
        }
    }

    /// A fixed-width table for logs and the terminal.
    pub fn table(&self, labels: &[String]) -> String {
        let mut out = format!("{:>14} {:>9} {:>9} {:>9} {:>8}\n", "class", "precision", "recall", "f1", "support");
        for c in &self.per_class {
            let label = labels.get(c.index).map_or("?", |s| s.as_str());
            out.push_str(&format!(
                "{:>14} {:>9.4} {:>9.4} {:>9.4} {:>8}\n",
                label, c.precision, c.recall, c.f1, c.support
            ));
        }
        out.push_str(&format!(
            "accuracy {:.4}  balanced accuracy {:.4}  macro P/R/F1 {:.4}/{:.4}/{:.4}  ({} samples)\n",
            self.accuracy, self.balanced_accuracy, self.macro_precision, self.macro_recall, self.macro_f1, self.samples
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_three_class_case() {
        // truth:     0 0 0 0 1 1 2 2 2 2
        // predicted: 0 0 1 2 1 1 2 2 0 2
        let truth = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2];
        let pred = [0, 0, 1, 2, 1, 1, 2, 2, 0, 2];
        let cm = ConfusionMatrix::from_predictions(3, &truth, &pred);
        assert_eq!(cm.counts, array![[2, 1, 1], [0, 2, 0], [1, 0, 3]]);
        let r = cm.report();
        assert_eq!(r.samples, 10);
        assert!(close(r.accuracy, 0.7));
        // recalls 2/4, 2/2, 3/4; precisions 2/3, 2/3, 3/4
        assert!(close(r.balanced_accuracy, (0.5 + 1.0 + 0.75) / 3.0));
        assert!(close(r.macro_recall, r.balanced_accuracy));
        assert!(close(r.macro_precision, (2.0 / 3.0 + 2.0 / 3.0 + 0.75) / 3.0));
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let want_f1 = (f1(2.0 / 3.0, 0.5) + f1(2.0 / 3.0, 1.0) + f1(0.75, 0.75)) / 3.0;
        assert!(close(r.macro_f1, want_f1));
        assert_eq!(r.per_class[2].support, 4);
    }

    #[test]
    fn balanced_accuracy_exposes_a_majority_class_guesser() {
        // 90 of class 0, 10 of class 1; always predicting 0 is 90% accurate but 50% balanced.
        let truth: Vec<u32> = (0..100).map(|i| u32::from(i >= 90)).collect();
        let r = ConfusionMatrix::from_predictions(2, &truth, &[0; 100]).report();
        assert!(close(r.accuracy, 0.9));
        assert!(close(r.balanced_accuracy, 0.5));
        assert!(close(r.per_class[1].precision, 0.0)); // never predicted: 0, not NaN
        assert!(close(r.macro_precision, 0.45));
    }

    #[test]
    fn absent_classes_do_not_count_in_macro_averages() {
        let r = ConfusionMatrix::from_predictions(3, &[0, 1], &[0, 1]).report();
        assert!(close(r.balanced_accuracy, 1.0));
        assert!(close(r.macro_f1, 1.0));
    }

    #[test]
    fn logits_use_argmax_and_csv_has_labels() {
        let mut cm = ConfusionMatrix::new(2);
        cm.add_logits(&[1, 0], array![[0.1f32, 2.0], [0.5, -1.0]].view());
        assert_eq!(cm.counts, array![[1, 0], [0, 1]]);
        let csv = cm.to_csv(&["T-shirt/top".into(), "a,b".into()]);
        assert_eq!(csv, "true\\predicted,T-shirt/top,\"a,b\"\nT-shirt/top,1,0\n\"a,b\",0,1\n");
    }
}
