//! `crdgen`: prints the `SharedMemDatabase` CRD as YAML (`crdgen > crds/shmdbs.yaml`).

fn main() -> anyhow::Result<()> {
    print!("{}", shmdb_operator::crd_yaml()?);
    Ok(())
}
