//! Renders the Markdown reference of a CustomResourceDefinition from its OpenAPI schema, so
//! the documentation of every field, default and validation rule cannot drift from the CRD.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One Markdown document describing every served version of the CRD in `crd_yaml`.
pub fn render_reference(crd_yaml: &str) -> Result<String> {
    let crd: Value = serde_yaml::from_str(crd_yaml).context("parsing the CRD YAML")?;
    let spec = field(&crd, "spec", "the CRD")?;
    let group = text(spec, "group", "spec")?;
    let names = field(spec, "names", "spec")?;
    let kind = text(names, "kind", "spec.names")?;

    let mut out = String::new();
    writeln!(out, "# {kind} reference\n")?;
    writeln!(
        out,
        "<!-- Generated from crds/ by packaging/src/reference.rs. Do not edit: run \
         `UPDATE_REFERENCE=1 cargo test -p wsfleet-packaging --test reference`. -->\n"
    )?;
    render_names(&mut out, group, spec, names)?;

    let versions = field(spec, "versions", "spec")?
        .as_array()
        .context("spec.versions is not a list")?;
    for version in versions.iter().filter(|v| v["served"] == Value::Bool(true)) {
        render_version(&mut out, group, kind, version)?;
    }
    Ok(out)
}

fn render_names(out: &mut String, group: &str, spec: &Value, names: &Value) -> Result<()> {
    let plural = text(names, "plural", "spec.names")?;
    writeln!(out, "| | |\n|---|---|")?;
    writeln!(out, "| API group | `{group}` |")?;
    writeln!(out, "| Resource | `{plural}.{group}` |")?;
    writeln!(out, "| Scope | {} |", text(spec, "scope", "spec")?)?;
    if let Some(short) = names["shortNames"].as_array() {
        let short: Vec<String> = short
            .iter()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect();
        writeln!(out, "| Short names | {} |", short.join(", "))?;
    }
    writeln!(out)?;
    Ok(())
}

fn render_version(out: &mut String, group: &str, kind: &str, version: &Value) -> Result<()> {
    let name = text(version, "name", "spec.versions[]")?;
    writeln!(out, "## {group}/{name}\n")?;
    render_columns(out, version)?;
    render_subresources(out, version)?;

    let schema = version
        .pointer("/schema/openAPIV3Schema")
        .with_context(|| format!("version {name} has no schema.openAPIV3Schema"))?;
    for part in ["spec", "status"] {
        let Some(part_schema) = schema.pointer(&format!("/properties/{part}")) else {
            continue;
        };
        writeln!(out, "### {kind}.{part}\n")?;
        if let Some(description) = part_schema["description"].as_str() {
            writeln!(out, "{}\n", one_line(description))?;
        }
        let mut rows = Vec::new();
        collect_rows(part, part_schema, false, &mut rows);
        writeln!(out, "| Field | Type | Required | Default | Description |")?;
        writeln!(out, "|---|---|---|---|---|")?;
        // The section's own row would repeat the description printed above the table.
        for row in rows
            .iter()
            .filter(|row| row.path != part || !row.rules.is_empty())
        {
            writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                row.path,
                row.kind,
                if row.required { "yes" } else { "" },
                row.default.as_deref().unwrap_or(""),
                row.description
            )?;
        }
        writeln!(out)?;
        render_rules(out, &rows)?;
    }
    Ok(())
}

fn render_columns(out: &mut String, version: &Value) -> Result<()> {
    let Some(columns) = version["additionalPrinterColumns"].as_array() else {
        return Ok(());
    };
    writeln!(out, "`kubectl get` columns:\n")?;
    writeln!(out, "| Column | Type | Source |\n|---|---|---|")?;
    for column in columns {
        writeln!(
            out,
            "| {} | {} | `{}` |",
            column["name"].as_str().unwrap_or_default(),
            column["type"].as_str().unwrap_or_default(),
            column["jsonPath"].as_str().unwrap_or_default()
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn render_subresources(out: &mut String, version: &Value) -> Result<()> {
    let Some(subresources) = version["subresources"].as_object() else {
        return Ok(());
    };
    let mut listed: Vec<String> = subresources.keys().map(|k| format!("`{k}`")).collect();
    listed.sort();
    writeln!(out, "Subresources: {}.", listed.join(", "))?;
    if let Some(scale) = subresources.get("scale") {
        writeln!(
            out,
            "The scale subresource reads `{}` and `{}` (selector `{}`), so `kubectl scale` and \
             autoscalers can address the resource.",
            scale["specReplicasPath"].as_str().unwrap_or_default(),
            scale["statusReplicasPath"].as_str().unwrap_or_default(),
            scale["labelSelectorPath"].as_str().unwrap_or_default()
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn render_rules(out: &mut String, rows: &[Row]) -> Result<()> {
    let rules: Vec<(&str, &Rule)> = rows
        .iter()
        .flat_map(|row| row.rules.iter().map(move |rule| (row.path.as_str(), rule)))
        .collect();
    if rules.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "Validation rules (checked by the API server on every write):\n"
    )?;
    writeln!(out, "| On | Rule | Message |\n|---|---|---|")?;
    for (path, rule) in rules {
        writeln!(
            out,
            "| `{path}` | `{}` | {} |",
            escape_cell(&rule.rule),
            escape_cell(&rule.message)
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// One documented field.
struct Row {
    path: String,
    kind: String,
    required: bool,
    default: Option<String>,
    description: String,
    rules: Vec<Rule>,
}

/// A CEL rule from `x-kubernetes-validations`.
struct Rule {
    rule: String,
    message: String,
}

/// Rows for `schema` at `path` and everything below it, depth first in schema order.
fn collect_rows(path: &str, schema: &Value, required: bool, rows: &mut Vec<Row>) {
    rows.push(Row {
        path: path.to_string(),
        kind: type_name(schema),
        required,
        default: schema
            .get("default")
            .map(|d| format!("`{}`", escape_cell(&d.to_string()))),
        description: describe(schema),
        rules: rules_of(schema),
    });

    collect_children(path, schema, rows);
    if let Some(items) = schema
        .get("items")
        .filter(|i| i.get("properties").is_some())
    {
        // The list's own row says "list of object"; rules on one element get a row of their own.
        let element_rules = rules_of(items);
        if !element_rules.is_empty() {
            rows.push(Row {
                path: format!("{path}[]"),
                kind: "object".into(),
                required: false,
                default: None,
                description: String::new(),
                rules: element_rules,
            });
        }
        collect_children(&format!("{path}[]"), items, rows);
    }
    if let Some(values) = schema
        .get("additionalProperties")
        .filter(|v| v.get("properties").is_some())
    {
        collect_children(&format!("{path}.<key>"), values, rows);
    }
}

/// Rows for the properties of an object schema, each marked required as the schema says.
fn collect_children(path: &str, schema: &Value, rows: &mut Vec<Row>) {
    let required_fields: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            collect_rows(
                &format!("{path}.{name}"),
                child,
                required_fields.contains(&name.as_str()),
                rows,
            );
        }
    }
}

/// A short type such as `string`, `integer (int32)`, `list of object` or `map of string`.
fn type_name(schema: &Value) -> String {
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        return "integer or string".into();
    }
    match schema["type"].as_str() {
        Some("array") => format!("list of {}", type_name(&schema["items"])),
        Some("object") => match schema.get("additionalProperties") {
            Some(values) if values.is_object() => format!("map of {}", type_name(values)),
            _ => "object".into(),
        },
        Some(other) => match schema["format"].as_str() {
            Some(format) => format!("{other} ({format})"),
            None => other.into(),
        },
        None if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) => "any".into(),
        None => "object".into(),
    }
}

/// The field's description followed by its constraints (enum, bounds, pattern).
fn describe(schema: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(description) = schema["description"].as_str() {
        parts.push(escape_cell(&one_line(description)));
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )
            })
            .collect();
        parts.push(format!("One of {}.", values.join(", ")));
    }
    for (key, label) in [
        ("minimum", "Minimum"),
        ("maximum", "Maximum"),
        ("minLength", "Minimum length"),
        ("maxLength", "Maximum length"),
        ("minItems", "Minimum items"),
        ("maxItems", "Maximum items"),
    ] {
        if let Some(bound) = schema.get(key) {
            parts.push(format!("{label} {}.", number_text(bound)));
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("Pattern `{}`.", escape_cell(pattern)));
    }
    parts.join(" ")
}

/// Bounds such as `1.0` read better as `1`; schema generators emit integers as floats.
fn number_text(value: &Value) -> String {
    match value.as_f64() {
        Some(number) if number.fract() == 0.0 && number.abs() < 1e15 => {
            format!("{}", number as i64)
        }
        _ => value.to_string(),
    }
}

fn rules_of(schema: &Value) -> Vec<Rule> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|rule| Rule {
                    rule: rule["rule"].as_str().unwrap_or_default().to_string(),
                    message: rule["message"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Joins wrapped description lines; a Markdown table cell is one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A pipe would end the table cell early.
fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn field<'a>(value: &'a Value, name: &str, parent: &str) -> Result<&'a Value> {
    match value.get(name) {
        Some(found) => Ok(found),
        None => bail!("{parent} has no field {name}"),
    }
}

fn text<'a>(value: &'a Value, name: &str, parent: &str) -> Result<&'a str> {
    field(value, name, parent)?
        .as_str()
        .with_context(|| format!("{parent}.{name} is not a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: example.io
  names: {kind: Widget, plural: widgets, shortNames: [wd]}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              x-kubernetes-validations:
                - {rule: "self.size > 0 || self.mode == 'Off'", message: "size must be positive"}
              properties:
                size: {type: integer, format: int32, minimum: 0.0, description: "How big.\n  Wrapped."}
                mode: {type: string, enum: [On, Off], default: On}
                ports:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: integer}
                labels:
                  type: object
                  additionalProperties: {type: string}
            status:
              type: object
              properties:
                ready: {type: boolean}
    - name: v0
      served: false
"#;

    #[test]
    fn documents_every_field_with_type_default_and_constraints() {
        let doc = render_reference(CRD).unwrap();
        assert!(doc.starts_with("# Widget reference\n"));
        assert!(doc.contains("| Resource | `widgets.example.io` |"));
        assert!(doc.contains("| Short names | `wd` |"));
        assert!(
            doc.contains(
                "| `spec.size` | integer (int32) | yes |  | How big. Wrapped. Minimum 0. |"
            )
        );
        assert!(doc.contains("| `spec.mode` | string |  | `\"On\"` | One of `On`, `Off`. |"));
        assert!(doc.contains("| `spec.ports[].port` | integer |"));
        assert!(doc.contains("| `spec.labels` | map of string |"));
        assert!(doc.contains("| `status.ready` | boolean |"));
    }

    #[test]
    fn lists_cel_rules_and_printer_columns_with_pipes_escaped() {
        let doc = render_reference(CRD).unwrap();
        assert!(doc.contains(
            "| `spec` | `self.size > 0 \\|\\| self.mode == 'Off'` | size must be positive |"
        ));
        assert!(
            doc.contains("| Ready | string | `.status.conditions[?(@.type==\"Ready\")].status` |")
        );
        assert!(doc.contains("Subresources: `status`."));
    }

    #[test]
    fn skips_versions_that_are_not_served() {
        let doc = render_reference(CRD).unwrap();
        assert!(doc.contains("## example.io/v1\n"));
        assert!(!doc.contains("example.io/v0"));
    }

    #[test]
    fn names_the_missing_field() {
        let error = render_reference("spec: {group: example.io}").unwrap_err();
        assert_eq!(error.to_string(), "spec has no field names");
    }
}
