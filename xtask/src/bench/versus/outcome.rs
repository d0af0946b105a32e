//! One side of the comparison and what one run of a workload on it gave.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use serde_json::Value;

use super::run_json;

/// How to start one side's worker for a workload.
pub struct Side {
    pub name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Arguments after the workload's name.
    trailing: Vec<String>,
}

impl Side {
    /// This xtask binary, as `xtask bench worker WORKLOAD`, with the caller's environment
    /// (OpenBLAS when the machine has it, unless `SCALPEL_BLAS=off`); the record says which
    /// matmul ran.
    pub fn scalpel(exe: PathBuf) -> Side {
        Side {
            name: "scalpel",
            program: exe,
            args: vec!["bench".into(), "worker".into()],
            trailing: vec![],
        }
    }

    pub fn pytorch(python: PathBuf, worker: PathBuf, spec: PathBuf, threads: usize) -> Side {
        Side {
            name: "pytorch",
            program: python,
            args: vec![
                worker.to_string_lossy().into_owned(),
                spec.to_string_lossy().into_owned(),
            ],
            trailing: vec![threads.to_string()],
        }
    }

    pub fn run(&self, workload: &str) -> Result<Outcome> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).arg(workload).args(&self.trailing);
        // transformers would otherwise look for the hub and print advice.
        cmd.env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_OFFLINE", "1");
        let v = run_json(&mut cmd, &format!("{} {workload} worker", self.name))?;
        Outcome::from_json(self.name, workload, &v)
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub side: &'static str,
    pub workload: String,
    pub rep: usize,
    pub secs: f64,
    pub units: usize,
    pub load_secs: f64,
    pub peak_rss_bytes: Option<u64>,
    /// What the workload computed, for the agreement check.
    pub result: Value,
    pub versions: Value,
    pub error: Option<String>,
}

impl Outcome {
    fn from_json(side: &'static str, workload: &str, v: &Value) -> Result<Outcome> {
        let num = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| anyhow::anyhow!("{side} {workload} worker: no number '{k}'"))
        };
        Ok(Outcome {
            side,
            workload: workload.to_string(),
            rep: 0,
            secs: num("secs")?,
            units: num("units")? as usize,
            load_secs: num("load_secs")?,
            peak_rss_bytes: v["peak_rss_bytes"].as_u64(),
            result: v["result"].clone(),
            versions: v["versions"].clone(),
            error: None,
        })
    }

    pub fn failed(side: &'static str, workload: &str, rep: usize, e: anyhow::Error) -> Outcome {
        Outcome {
            side,
            workload: workload.to_string(),
            rep,
            secs: f64::NAN,
            units: 0,
            load_secs: f64::NAN,
            peak_rss_bytes: None,
            result: Value::Null,
            versions: Value::Null,
            error: Some(format!("{e:#}")),
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    pub fn rate(&self) -> f64 {
        self.units as f64 / self.secs
    }
}

/// What a workload's rate counts.
pub fn unit(workload: &str) -> &'static str {
    match workload {
        "loglik" => "items",
        "generate" => "tokens",
        "trace" => "sites",
        "perplexity" => "tokens",
        "decode" => "tokens",
        _ => "units",
    }
}
