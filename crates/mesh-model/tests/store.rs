//! The store's last-good semantics, driven through the file source's synchronous reload:
//! invalid documents keep the previous version, syntax errors keep what the file defined,
//! removed documents and deleted files disappear, one snapshot per load.

use std::net::IpAddr;
use std::path::Path;

use mesh_api::{Diagnostic, Origin};
use mesh_model::{Batch, ConfigStore, FileSource, MeshConfig, Model, Update};

fn svc(name: &str, ip: &str, port: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: {port}\n"
    )
}

fn write(path: &Path, docs: &[String]) {
    std::fs::write(path, docs.join("---\n")).unwrap();
}

fn port_of(m: &Model, name: &str) -> Option<u16> {
    m.service("demo", name).map(|s| s.ports[0].port)
}

fn errors(store: &ConfigStore) -> Vec<Diagnostic> {
    store.diagnostics().iter().filter(|d| d.is_error()).cloned().collect()
}

#[test]
fn invalid_document_keeps_last_good_version_and_others_update() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    write(&file, &[svc("a", "10.96.0.1", "80"), svc("b", "10.96.0.2", "80"), svc("c", "10.96.0.3", "80")]);
    let store = ConfigStore::new(MeshConfig::default());
    let mut source = FileSource::new([dir.path()]);
    assert_eq!(source.load_into(&store), 1);
    let m = store.current();
    assert_eq!((port_of(&m, "a"), port_of(&m, "b"), port_of(&m, "c")), (Some(80), Some(80), Some(80)));
    assert!(errors(&store).is_empty());

    // `b` gets a type error; `a` and `c` change.
    write(
        &file,
        &[svc("a", "10.96.0.1", "81"), svc("b", "10.96.0.2", "not-a-port"), svc("c", "10.96.0.3", "83")],
    );
    assert_eq!(source.load_into(&store), 2);
    let m = store.current();
    assert_eq!(m.generation(), 2);
    assert_eq!(port_of(&m, "a"), Some(81));
    assert_eq!(port_of(&m, "b"), Some(80), "last good version of b stays");
    assert_eq!(port_of(&m, "c"), Some(83));
    let errs = errors(&store);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.origin, Origin::File { path: file.display().to_string().into(), doc: 1 });
    assert_eq!(
        (e.object.kind.as_str(), e.object.namespace.as_str(), e.object.name.as_str()),
        ("Service", "demo", "b")
    );
    assert!(e.field.starts_with("spec.ports[0].port"), "field path: {e}");
    assert!(
        store.diagnostics().iter().any(|d| !d.is_error() && d.message.contains("last good version")),
        "a note says the old version is in force"
    );

    // Fixed: the error goes away and the new version applies.
    write(&file, &[svc("a", "10.96.0.1", "81"), svc("b", "10.96.0.2", "82"), svc("c", "10.96.0.3", "83")]);
    source.load_into(&store);
    assert_eq!(port_of(&store.current(), "b"), Some(82));
    assert!(store.diagnostics().is_empty());

    // A document removed from the file: its object disappears.
    write(&file, &[svc("a", "10.96.0.1", "81"), svc("c", "10.96.0.3", "83")]);
    source.load_into(&store);
    assert_eq!(port_of(&store.current(), "b"), None);
    assert!(store.current().service_by_vip("10.96.0.2".parse::<IpAddr>().unwrap()).is_none());
}

#[test]
fn yaml_syntax_error_keeps_what_the_file_defined() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    write(&file, &[svc("a", "10.96.0.1", "80"), svc("b", "10.96.0.2", "80")]);
    let store = ConfigStore::new(MeshConfig::default());
    let mut source = FileSource::new([&file]);
    source.load_into(&store);

    // Doc 0 changes; doc 1 is broken YAML (so we cannot know what it defines now).
    let broken = "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: demo\nspec: [\n".to_string();
    write(&file, &[svc("a", "10.96.0.1", "81"), broken]);
    source.load_into(&store);
    let m = store.current();
    assert_eq!(port_of(&m, "a"), Some(81), "valid documents of the file still update");
    assert_eq!(port_of(&m, "b"), Some(80), "objects of the broken document stay");
    let errs = errors(&store);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].origin, Origin::File { path: file.display().to_string().into(), doc: 1 });
    assert!(errs[0].message.contains("YAML") && errs[0].message.contains("line"), "{}", errs[0]);

    // Deleting the file removes everything it defined.
    std::fs::remove_file(&file).unwrap();
    source.load_into(&store);
    let m = store.current();
    assert!(m.services().is_empty());
    assert_eq!(errors(&store).len(), 1, "the missing path itself is reported");
    assert!(errors(&store)[0].message.contains("cannot read"));
}

#[test]
fn duplicate_across_files_first_wins_and_removal_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), &[svc("dup", "10.96.0.1", "80")]);
    write(&dir.path().join("b.yaml"), &[svc("dup", "10.96.0.2", "90")]);
    let store = ConfigStore::new(MeshConfig::default());
    let mut source = FileSource::new([dir.path()]);
    source.load_into(&store);
    assert_eq!(port_of(&store.current(), "dup"), Some(80));
    let errs = errors(&store);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].to_string().contains("b.yaml:0 Service demo/dup: metadata.name: already defined at"),
        "{}",
        errs[0]
    );

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    source.load_into(&store);
    assert_eq!(port_of(&store.current(), "dup"), Some(90), "the other definition takes over");
    assert!(errors(&store).is_empty());
}

#[test]
fn unchanged_files_do_not_publish_and_batches_publish_once() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), &[svc("a", "10.96.0.1", "80")]);
    let store = ConfigStore::new(MeshConfig::default());
    let handle = store.handle();
    let mut source = FileSource::new([dir.path()]);
    assert_eq!(source.load_into(&store), 1);
    assert_eq!(source.load_into(&store), 1, "nothing changed");
    assert_eq!(handle.generation(), 1);
    // Two units in one batch: one snapshot.
    let g = store.apply(Batch {
        updates: vec![Update::Remove { unit: "x".into() }, Update::Remove { unit: "y".into() }],
    });
    assert_eq!((g, handle.current().generation()), (2, 2));
}

#[tokio::test]
async fn handle_sees_changes() {
    let store = ConfigStore::new(MeshConfig::default());
    let mut handle = store.handle();
    assert_eq!(handle.current().generation(), 0);
    let waiter = tokio::spawn(async move {
        handle.changed().await;
        handle.current().generation()
    });
    tokio::task::yield_now().await;
    store.apply(Batch::default());
    assert_eq!(waiter.await.unwrap(), 1);
}
