//! The checked-in CRD YAML must be exactly what the Rust types generate.
//!
//! Regenerate with `cargo run -p shmdb-operator --bin crdgen > crds/shmdbs.yaml`.

#[test]
fn crds_yaml_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/shmdbs.yaml");
    let generated = shmdb_operator::crd_yaml().expect("CRD serializes");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/shmdbs.yaml is out of date with the Rust types; regenerate it with \
         `cargo run -p shmdb-operator --bin crdgen > crds/shmdbs.yaml`"
    );
}

#[test]
fn crd_has_scale_status_short_name_and_printer_columns() {
    use kube::CustomResourceExt;
    let crd = shmdb_operator::crd::SharedMemDatabase::crd();
    assert_eq!(crd.spec.group, "shmdb.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["smdb".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = version.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.processing.replicas");
    assert_eq!(scale.status_replicas_path, ".status.processing.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.processing.selector")
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for want in ["Ready", "Processing", "Storage", "RF", "Map", "Age"] {
        assert!(
            columns.contains(&want),
            "missing column {want}: {columns:?}"
        );
    }
    let yaml = shmdb_operator::crd_yaml().expect("yaml");
    assert!(yaml.contains("x-kubernetes-validations"));
}
