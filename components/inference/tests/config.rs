//! Spin variables for `/predict`: a bad value keeps its default and is reported, never panics.

use kana_inference::api::PREDICT_VARIABLES;
use kana_inference::{Limits, PredictOptions};

fn from(pairs: &[(&str, &str)]) -> (PredictOptions, Vec<String>) {
    PredictOptions::from_variables(|name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
}

#[test]
fn unset_and_empty_variables_give_the_defaults_silently() {
    let (options, problems) = from(&[]);
    assert_eq!((options.limits, options.chunk_size, problems.len()), (Limits::default(), None, 0));
    // spin.toml's own defaults: chunk_size is "" (the model's default).
    let (options, problems) = from(&[("max_images", "1000"), ("max_upload_bytes", "4194304"), ("chunk_size", "")]);
    assert_eq!((options.limits, options.chunk_size, problems.len()), (Limits::default(), None, 0));
}

#[test]
fn good_values_are_read_with_surrounding_spaces() {
    let (options, problems) = from(&[("max_images", " 12 "), ("max_upload_bytes", "2048\n"), ("chunk_size", "32")]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(options.limits, Limits { max_images: 12, max_body_bytes: 2048 });
    assert_eq!(options.chunk_size, Some(32));
}

#[test]
fn bad_values_keep_the_default_and_say_which_variable_was_wrong() {
    for bad in ["abc", "0", "-5", "4MiB", "1e6", "99999999999999999999999999"] {
        let (options, problems) = from(&[("max_images", bad), ("max_upload_bytes", bad), ("chunk_size", bad)]);
        assert_eq!(options.limits, Limits::default(), "{bad}");
        assert_eq!(options.chunk_size, None, "{bad}");
        assert_eq!(problems.len(), 3, "{bad}: {problems:?}");
        for (problem, name) in problems.iter().zip(PREDICT_VARIABLES) {
            assert!(problem.contains(name) && problem.contains(bad.trim()), "{problem}");
        }
    }
}
