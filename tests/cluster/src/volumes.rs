//! ConfigMaps and Secrets in a pod: env (`valueFrom.configMapKeyRef`/`secretKeyRef`,
//! `envFrom`) and volumes (`configMap`, `secret`, which includes the service-account token
//! volume a 1.20 apiserver adds to every pod), as pure functions over the fetched objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use base64::Engine;
use serde_json::Value;

/// Key → bytes of one ConfigMap (`data` and `binaryData`) or Secret (`data`, decoded).
pub type Data = BTreeMap<String, Vec<u8>>;

/// One file of a configMap or secret volume: path relative to the volume, content, mode.
pub type VolumeFile = (PathBuf, Vec<u8>, u32);

/// The ConfigMaps and Secrets a pod refers to, as fetched (absent: not found).
#[derive(Debug, Default, Clone)]
pub struct Refs {
    pub config_maps: HashMap<String, Data>,
    pub secrets: HashMap<String, Data>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    pub fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
}

/// Every (kind, name) the pod's env, envFrom and volumes refer to.
pub fn referenced(pod: &Value) -> BTreeSet<(Kind, String)> {
    let mut out = BTreeSet::new();
    let mut add = |k: Kind, n: &Value| {
        if let Some(n) = n.as_str() {
            out.insert((k, n.to_string()));
        }
    };
    let spec = &pod["spec"];
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(Kind::ConfigMap, &e["valueFrom"]["configMapKeyRef"]["name"]);
                add(Kind::Secret, &e["valueFrom"]["secretKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(Kind::ConfigMap, &e["configMapRef"]["name"]);
                add(Kind::Secret, &e["secretRef"]["name"]);
            }
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(Kind::ConfigMap, &v["configMap"]["name"]);
        add(Kind::Secret, &v["secret"]["secretName"]);
    }
    out
}

/// The data of a fetched ConfigMap or Secret object.
pub fn data_of(kind: Kind, obj: &Value) -> Data {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default()
    };
    let mut d = Data::new();
    let map = |v: &Value| v.as_object().cloned().unwrap_or_default();
    match kind {
        Kind::ConfigMap => {
            for (k, v) in map(&obj["data"]) {
                d.insert(k, v.as_str().unwrap_or("").as_bytes().to_vec());
            }
            for (k, v) in map(&obj["binaryData"]) {
                d.insert(k, b64(&v));
            }
        }
        Kind::Secret => {
            for (k, v) in map(&obj["data"]) {
                d.insert(k, b64(&v));
            }
        }
    }
    d
}

impl Refs {
    fn get(&self, kind: Kind, name: &str) -> Option<&Data> {
        match kind {
            Kind::ConfigMap => self.config_maps.get(name),
            Kind::Secret => self.secrets.get(name),
        }
    }

    pub fn insert(&mut self, kind: Kind, name: String, data: Data) {
        match kind {
            Kind::ConfigMap => self.config_maps.insert(name, data),
            Kind::Secret => self.secrets.insert(name, data),
        };
    }

    /// One key of a `configMapKeyRef`/`secretKeyRef`; Ok(None) when it is missing and optional.
    pub fn key_ref(&self, kind: Kind, r: &Value) -> Result<Option<String>, String> {
        let name = r["name"].as_str().unwrap_or("");
        let key = r["key"].as_str().unwrap_or("");
        let optional = r["optional"].as_bool().unwrap_or(false);
        match self.get(kind, name).map(|d| d.get(key)) {
            Some(Some(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            _ if optional => Ok(None),
            None => Err(format!("{} {name:?} not found", kind.label())),
            Some(None) => Err(format!(
                "couldn't find key {key} in {} {name:?}",
                kind.label()
            )),
        }
    }

    /// The variables of an `envFrom` entry (keys that are not valid names are skipped, as the
    /// kubelet does).
    pub fn env_from(&self, e: &Value) -> Result<Vec<(String, String)>, String> {
        let (kind, r) = if e["configMapRef"].is_object() {
            (Kind::ConfigMap, &e["configMapRef"])
        } else if e["secretRef"].is_object() {
            (Kind::Secret, &e["secretRef"])
        } else {
            return Err("envFrom entry has neither configMapRef nor secretRef".into());
        };
        let name = r["name"].as_str().unwrap_or("");
        let prefix = e["prefix"].as_str().unwrap_or("");
        match self.get(kind, name) {
            Some(d) => Ok(d
                .iter()
                .filter(|(k, _)| is_env_name(&format!("{prefix}{k}")))
                .map(|(k, v)| {
                    (
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect()),
            None if r["optional"].as_bool().unwrap_or(false) => Ok(vec![]),
            None => Err(format!("{} {name:?} not found", kind.label())),
        }
    }

    /// The files of a `configMap` or `secret` volume: (relative path, content, mode).
    /// Ok(None): not a volume of these kinds.
    pub fn volume_files(&self, vol: &Value) -> Result<Option<Vec<VolumeFile>>, String> {
        let (kind, src, name) = if vol["configMap"].is_object() {
            (
                Kind::ConfigMap,
                &vol["configMap"],
                &vol["configMap"]["name"],
            )
        } else if vol["secret"].is_object() {
            (Kind::Secret, &vol["secret"], &vol["secret"]["secretName"])
        } else {
            return Ok(None);
        };
        let name = name.as_str().unwrap_or("");
        let mode = src["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        let Some(data) = self.get(kind, name) else {
            if src["optional"].as_bool().unwrap_or(false) {
                return Ok(Some(vec![]));
            }
            return Err(format!(
                "volume {:?}: {} {name:?} not found",
                vol["name"].as_str().unwrap_or(""),
                kind.label()
            ));
        };
        let mut files = Vec::new();
        match src["items"].as_array().filter(|a| !a.is_empty()) {
            None => {
                for (k, v) in data {
                    files.push((PathBuf::from(k), v.clone(), mode));
                }
            }
            Some(items) => {
                for it in items {
                    let key = it["key"].as_str().unwrap_or("");
                    let path = it["path"].as_str().unwrap_or(key);
                    if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                        return Err(format!("volume item path {path:?} must be relative"));
                    }
                    let v = data.get(key).ok_or_else(|| {
                        format!("couldn't find key {key} in {} {name:?}", kind.label())
                    })?;
                    let m = it["mode"].as_u64().map(|m| m as u32).unwrap_or(mode);
                    files.push((PathBuf::from(path), v.clone(), m));
                }
            }
        }
        Ok(Some(files))
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refs() -> Refs {
        let mut r = Refs::default();
        r.insert(
            Kind::ConfigMap,
            "cm".into(),
            data_of(
                Kind::ConfigMap,
                &json!({"data": {"A": "1", "train.py": "print(1)", "1bad": "x"},
                    "binaryData": {"bin": "AAE="}}),
            ),
        );
        r.insert(
            Kind::Secret,
            "s".into(),
            data_of(Kind::Secret, &json!({"data": {"token": "c2VjcmV0"}})),
        );
        r
    }

    #[test]
    fn references_from_env_envfrom_and_volumes() {
        let pod = json!({"spec": {
            "initContainers": [{"envFrom": [{"secretRef": {"name": "s"}}]}],
            "containers": [{"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "A"}}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "tok"}}, {"name": "e", "emptyDir": {}}]}});
        let r: Vec<_> = referenced(&pod).into_iter().collect();
        assert_eq!(
            r,
            vec![
                (Kind::ConfigMap, "cm".to_string()),
                (Kind::Secret, "s".to_string()),
                (Kind::Secret, "tok".to_string())
            ]
        );
    }

    #[test]
    fn key_refs_decode_and_report_missing() {
        let r = refs();
        let k = |kind, v| r.key_ref(kind, &v);
        assert_eq!(
            k(Kind::ConfigMap, json!({"name": "cm", "key": "A"})),
            Ok(Some("1".into()))
        );
        assert_eq!(
            k(Kind::Secret, json!({"name": "s", "key": "token"})),
            Ok(Some("secret".into()))
        );
        assert_eq!(
            k(
                Kind::Secret,
                json!({"name": "no", "key": "k", "optional": true})
            ),
            Ok(None)
        );
        let e = k(Kind::ConfigMap, json!({"name": "no", "key": "k"})).unwrap_err();
        assert!(e.contains("configmap \"no\" not found"), "{e}");
        let e = k(Kind::ConfigMap, json!({"name": "cm", "key": "zz"})).unwrap_err();
        assert!(e.contains("couldn't find key zz"), "{e}");
    }

    #[test]
    fn env_from_prefixes_and_skips_invalid_names() {
        let r = refs();
        let v = r
            .env_from(&json!({"configMapRef": {"name": "cm"}, "prefix": "P_"}))
            .unwrap();
        assert!(v.contains(&("P_A".into(), "1".into())), "{v:?}");
        assert!(v.contains(&("P_1bad".into(), "x".into())), "{v:?}");
        let v = r
            .env_from(&json!({"configMapRef": {"name": "cm"}}))
            .unwrap();
        assert!(!v.iter().any(|(k, _)| k == "1bad"), "{v:?}");
        assert!(r.env_from(&json!({"secretRef": {"name": "nope"}})).is_err());
    }

    #[test]
    fn volume_files_all_keys_or_items_with_modes() {
        let r = refs();
        let all = r
            .volume_files(&json!({"name": "v", "configMap": {"name": "cm", "defaultMode": 0o755}}))
            .unwrap()
            .unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.contains(&(PathBuf::from("bin"), vec![0, 1], 0o755)));
        let items = r
            .volume_files(&json!({"name": "v", "configMap": {"name": "cm",
                "items": [{"key": "train.py", "path": "src/t.py", "mode": 0o600}]}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            items,
            vec![(PathBuf::from("src/t.py"), b"print(1)".to_vec(), 0o600)]
        );
        let e = r
            .volume_files(&json!({"name": "v", "secret": {"secretName": "gone"}}))
            .unwrap_err();
        assert!(e.contains("secret \"gone\" not found"), "{e}");
        assert_eq!(
            r.volume_files(
                &json!({"name": "v", "secret": {"secretName": "gone", "optional": true}})
            ),
            Ok(Some(vec![]))
        );
        assert!(r
            .volume_files(&json!({"name": "v", "configMap": {"name": "cm", "items": [{"key": "A", "path": "../x"}]}}))
            .is_err());
        assert_eq!(
            r.volume_files(&json!({"name": "e", "emptyDir": {}})),
            Ok(None)
        );
    }
}
