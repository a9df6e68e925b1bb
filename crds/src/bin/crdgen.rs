//! Prints the ElasticJob CRD as YAML: `cargo run -p elasticjob-crds --bin crdgen > crds/elasticjob.yaml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match elasticjob_crds::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}
