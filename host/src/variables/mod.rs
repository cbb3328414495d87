//! `spin:variables@3.0.0`: application `[variables]` with defaults, overridden by environment
//! variables `SPIN_VARIABLE_<NAME>` (Spin's env provider), rendered into each component's
//! `[component.x.variables]` templates (`"prefix-{{ name }}"`). Everything resolves at start, so a
//! missing required variable stops the host before it serves anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use wasmtime::component::{Accessor, HasData, Linker};

use crate::bindings::spin::spin::variables::variables::{self as wit, Error};
use crate::manifest::VariableDecl;
use crate::state::HostState;

/// A component's resolved variables: name → value.
pub type ComponentVariables = Arc<BTreeMap<String, String>>;

/// Resolves application variables; `env` looks up an environment variable (injected for tests).
pub fn resolve_app_variables(
    decls: &BTreeMap<String, VariableDecl>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for (name, decl) in decls {
        let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        let value = match (env(&env_name), &decl.default) {
            (Some(value), _) => value,
            (None, Some(default)) => default.clone(),
            (None, None) if decl.required => {
                bail!("required variable `{name}` has no value: set {env_name}")
            }
            (None, None) => continue,
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// Renders a component's variable templates against the application variables.
pub fn resolve_component_variables(
    templates: &BTreeMap<String, String>,
    app: &BTreeMap<String, String>,
) -> Result<ComponentVariables> {
    let rendered = templates
        .iter()
        .map(|(name, template)| {
            let value = render(template, app).with_context(|| format!("variable `{name}`"))?;
            Ok((name.clone(), value))
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(rendered))
}

/// Replaces every `{{ name }}` with the application variable's value.
fn render(template: &str, app: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else { bail!("unclosed `{{{{` in `{template}`") };
        let name = rest[start + 2..start + len].trim();
        let value = app.get(name).with_context(|| format!("`{template}` uses undefined variable `{name}`"))?;
        out.push_str(value);
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Marker type the generated traits are implemented on.
pub struct Variables;

impl HasData for Variables {
    type Data<'a> = &'a mut HostState;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wit::add_to_linker::<HostState, Variables>(linker, |state| state)?;
    Ok(())
}

impl<T> wit::HostWithStore<T> for Variables {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Result<String, Error> {
        accessor.with(|mut access| {
            let valid = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if name.is_empty() || !valid {
                return Err(Error::InvalidName(name));
            }
            access.get().variables.get(&name).cloned().ok_or(Error::Undefined(name))
        })
    }
}

impl wit::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> BTreeMap<String, VariableDecl> {
        BTreeMap::from([
            ("deployment".into(), VariableDecl { default: Some("local".into()), ..Default::default() }),
            ("token".into(), VariableDecl { required: true, secret: true, ..Default::default() }),
            ("optional".into(), VariableDecl::default()),
        ])
    }

    #[test]
    fn environment_overrides_defaults() {
        let env = |name: &str| match name {
            "SPIN_VARIABLE_TOKEN" => Some("t0k".to_owned()),
            "SPIN_VARIABLE_DEPLOYMENT" => Some("ci".to_owned()),
            _ => None,
        };
        let app = resolve_app_variables(&decls(), env).unwrap();
        assert_eq!(app["deployment"], "ci");
        assert_eq!(app["token"], "t0k");
        assert!(!app.contains_key("optional"));
        let only_token = |name: &str| (name == "SPIN_VARIABLE_TOKEN").then(|| "x".to_owned());
        assert_eq!(resolve_app_variables(&decls(), only_token).unwrap()["deployment"], "local");
    }

    #[test]
    fn missing_required_variable_is_an_error() {
        let err = resolve_app_variables(&decls(), |_| None).unwrap_err();
        assert!(err.to_string().contains("SPIN_VARIABLE_TOKEN"), "{err}");
    }

    #[test]
    fn component_templates_render() {
        let app = BTreeMap::from([("deployment".into(), "ci".into()), ("region".into(), "eu".into())]);
        let templates = BTreeMap::from([
            ("where".into(), "{{ deployment }}-{{region}}!".into()),
            ("literal".into(), "plain".into()),
        ]);
        let vars = resolve_component_variables(&templates, &app).unwrap();
        assert_eq!(vars["where"], "ci-eu!");
        assert_eq!(vars["literal"], "plain");
        let unknown = BTreeMap::from([("x".into(), "{{ nope }}".into())]);
        assert!(resolve_component_variables(&unknown, &app).is_err());
        let unclosed = BTreeMap::from([("x".into(), "{{ deployment".into())]);
        assert!(resolve_component_variables(&unclosed, &app).is_err());
    }
}
