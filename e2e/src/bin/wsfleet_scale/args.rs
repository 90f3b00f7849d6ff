//! The scale run's command line.

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
wsfleet-scale: creates COUNT WebSocketServices in one namespace under one operator and reports
how long until every child exists and every object is Ready, the time from each object to its
last child (p50, p99), the operator's writes, CPU time and peak resident memory.

usage: wsfleet-scale [--real-node] [COUNT]

  COUNT        how many WebSocketServices: default 1000 on kwok's fake nodes, 100 on a real node
  --real-node  run the gateways as real pods on one real node on this machine (kubelet,
               containerd, kube-proxy; needs root and no other real node running). Also reports
               when every gateway pod is Ready, and opens one WebSocket through each fleet's
               Service to an echo upstream, counting the fleets that fail. The host is restored
               on exit, after a failure or Ctrl-C too.
  -h, --help   print this text
";

/// What one scale run does.
pub struct Args {
    pub count: usize,
    pub real_node: bool,
}

impl Args {
    /// The program's arguments, or `None` once the usage is printed for `--help`.
    pub fn from_command_line() -> Result<Option<Self>> {
        Self::parse(std::env::args().skip(1))
    }

    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut real_node = false;
        let mut count = None;
        for arg in args {
            match arg.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                "--real-node" => real_node = true,
                _ if count.is_none() => {
                    count = Some(
                        arg.parse()
                            .with_context(|| format!("COUNT must be a number, not {arg:?}"))?,
                    );
                }
                _ => bail!("unexpected argument {arg:?}\n\n{USAGE}"),
            }
        }
        // A real node holds about 100 gateway pods on this machine's 2 cores.
        let default_count = if real_node { 100 } else { 1000 };
        Ok(Some(Self {
            count: count.unwrap_or(default_count),
            real_node,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>> {
        Args::parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn counts_default_by_the_kind_of_node() {
        let kwok = parse(&[]).unwrap().unwrap();
        assert_eq!((kwok.count, kwok.real_node), (1000, false));
        let real = parse(&["--real-node"]).unwrap().unwrap();
        assert_eq!((real.count, real.real_node), (100, true));
    }

    #[test]
    fn the_count_and_the_flag_come_in_either_order() {
        for args in [["--real-node", "50"], ["50", "--real-node"]] {
            let parsed = parse(&args).unwrap().unwrap();
            assert_eq!((parsed.count, parsed.real_node), (50, true));
        }
    }

    #[test]
    fn help_runs_nothing_and_strays_are_refused() {
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["ten"]).is_err());
        assert!(parse(&["10", "20"]).is_err());
    }
}
