//! Schema adjustments for the embedded pod template.
//!
//! k8s-openapi's full `PodTemplateSpec` schema, with every description, makes a 320 KB CRD:
//! too big for `kubectl apply` (its last-applied annotation is limited to 256 KiB). Here the
//! template's descriptions are cut to their first sentence (`kubectl explain pod.spec` has the
//! rest), its metadata is reduced to the labels and annotations that pods take from it, and the
//! lists that the CRD's CEL rules walk get bounds, so a CEL-enabled apiserver's cost estimate
//! stays within its budget.

use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// Longest description kept inside the template.
pub const MAX_DESCRIPTION: usize = 200;
/// Most containers in the template (bounds the CEL rule over their environment).
pub const MAX_CONTAINERS: u64 = 16;
/// Most environment variables per container.
pub const MAX_ENV: u64 = 512;
/// Longest environment variable name.
pub const MAX_ENV_NAME: u64 = 256;

/// Schema of `spec.template`.
pub fn pod_template(generator: &mut SchemaGenerator) -> Schema {
    let mut value = generator.subschema_for::<PodTemplateSpec>().to_value();
    shorten_descriptions(&mut value);
    if let Some(props) = properties(&mut value) {
        props.insert(
            "metadata".into(),
            json!({
                "description": "Labels and annotations for the pods. The operator adds its own labels (elasticjob.dev/job-name, elasticjob.dev/replica-index, app.kubernetes.io/*).",
                "type": "object",
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }),
        );
        if let Some(spec) = props.get_mut("spec") {
            bound_containers(spec);
        }
    }
    Schema::try_from(value).expect("the pod template schema is an object")
}

fn properties(schema: &mut Value) -> Option<&mut Map<String, Value>> {
    schema.get_mut("properties")?.as_object_mut()
}

fn bound_containers(pod_spec: &mut Value) {
    let Some(containers) = properties(pod_spec).and_then(|p| p.get_mut("containers")) else {
        return;
    };
    containers["maxItems"] = json!(MAX_CONTAINERS);
    let Some(env) = containers
        .get_mut("items")
        .and_then(properties)
        .and_then(|p| p.get_mut("env"))
    else {
        return;
    };
    env["maxItems"] = json!(MAX_ENV);
    if let Some(name) = env
        .get_mut("items")
        .and_then(properties)
        .and_then(|p| p.get_mut("name"))
    {
        name["maxLength"] = json!(MAX_ENV_NAME);
    }
}

/// Rejoins the lines of every description in a schema into paragraphs: doc comments wrap at
/// 100 columns, `kubectl explain` wraps text itself. A blank line still separates paragraphs.
pub fn join_lines(schema: &mut Schema) {
    let mut value = std::mem::take(schema).to_value();
    walk_descriptions(&mut value, &mut |d| {
        *d = d
            .split("\n\n")
            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n")
    });
    *schema = Schema::try_from(value).expect("a schema stays a schema");
}

/// Cuts every description in a schema to its first sentence, at most [`MAX_DESCRIPTION`]
/// characters. Walks subschemas only (a property named `description` is left alone).
pub fn shorten_descriptions(schema: &mut Value) {
    walk_descriptions(schema, &mut |d| *d = first_sentence(d));
}

/// Applies `f` to the description of a schema and of each of its subschemas.
fn walk_descriptions(schema: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::String(d)) = obj.get_mut("description") {
        f(d);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = obj.get_mut(key) {
            walk_descriptions(sub, f);
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for sub in props.values_mut() {
            walk_descriptions(sub, f);
        }
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        if let Some(Value::Array(subs)) = obj.get_mut(key) {
            for sub in subs {
                walk_descriptions(sub, f);
            }
        }
    }
}

fn first_sentence(text: &str) -> String {
    let end = text
        .match_indices(". ")
        .map(|(i, _)| i)
        .filter(|&i| {
            !["e.g", "i.e", "etc", "vs"]
                .iter()
                .any(|a| text[..i].ends_with(a))
        })
        .map(|i| i + 1)
        .chain(text.find('\n'))
        .min()
        .unwrap_or(text.len());
    let sentence = text[..end].trim();
    if sentence.chars().count() <= MAX_DESCRIPTION {
        return sentence.to_string();
    }
    let cut: String = sentence.chars().take(MAX_DESCRIPTION - 3).collect();
    let cut = cut.rsplit_once(' ').map(|(head, _)| head).unwrap_or(&cut);
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence("One. Two."), "One.");
        assert_eq!(first_sentence("e.g. this. And"), "e.g. this.");
        assert_eq!(first_sentence("Line one\nline two"), "Line one");
        assert_eq!(first_sentence("No stop"), "No stop");
        let long = "word ".repeat(100);
        let cut = first_sentence(&long);
        assert!(
            cut.len() <= MAX_DESCRIPTION && cut.ends_with("word..."),
            "{cut}"
        );
    }

    #[test]
    fn only_schema_descriptions_are_touched() {
        let mut s = json!({
            "description": "Top. More.",
            "properties": {"description": {"type": "string", "description": "A field. Named description."}},
            "items": {"description": "Item. Details."},
        });
        shorten_descriptions(&mut s);
        assert_eq!(s["description"], "Top.");
        assert_eq!(s["properties"]["description"]["description"], "A field.");
        assert_eq!(s["properties"]["description"]["type"], "string");
        assert_eq!(s["items"]["description"], "Item.");
    }

    #[test]
    fn lines_are_joined_into_paragraphs() {
        let mut s = Schema::try_from(json!({
            "description": "One\nline.\n\nTwo.",
            "properties": {"a": {"description": "x\ny"}},
        }))
        .unwrap();
        join_lines(&mut s);
        assert_eq!(s.get("description").unwrap(), "One line.\n\nTwo.");
        assert_eq!(s.pointer("/properties/a/description").unwrap(), "x y");
    }
}
