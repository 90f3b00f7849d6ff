//! The node's network: a bridge that holds the node's address and the pods, a route that keeps
//! the Service range on this machine, and the firewall rule that keeps pods' traffic here.
//!
//! Pods may reach other pods, Services and the node, and nothing else: a rule in the mangle
//! table, which sees a packet before kube-proxy's DNAT rewrites a Service address, drops any
//! other destination. kube-proxy never touches the mangle table, so its own rules cannot get
//! in front of this one.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::command::run;

/// The Linux bridge the CNI plugin puts pods on; it carries [`NODE_IP`].
pub const BRIDGE: &str = "wsfleet0";
/// The node's address: kubelet, the apiserver and cluster DNS listen here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
pub const POD_RANGE: &str = "10.211.0.0/24";
pub const SERVICE_RANGE: &str = "10.212.0.0/16";
/// The first address of the Service range, which the apiserver gives the `kubernetes` Service.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 1);
/// Host addresses on the bridge for clients that must differ by source address (the Service's
/// ClientIP affinity); outside the range the CNI plugin hands to pods.
pub const CLIENT_ADDRESSES: [Ipv4Addr; 8] = [
    Ipv4Addr::new(10, 211, 0, 2),
    Ipv4Addr::new(10, 211, 0, 3),
    Ipv4Addr::new(10, 211, 0, 4),
    Ipv4Addr::new(10, 211, 0, 5),
    Ipv4Addr::new(10, 211, 0, 6),
    Ipv4Addr::new(10, 211, 0, 7),
    Ipv4Addr::new(10, 211, 0, 8),
    Ipv4Addr::new(10, 211, 0, 9),
];
/// The mangle-table chain that drops pods' traffic to anywhere else.
pub const ISOLATION_CHAIN: &str = "WSFLEET-POD-ISOLATION";

/// Creates the bridge, the Service route and the isolation rule.
pub fn up() -> Result<()> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE],
    )?;
    for client in CLIENT_ADDRESSES {
        run(
            "ip",
            &["addr", "add", &format!("{client}/32"), "dev", BRIDGE],
        )?;
    }
    run("ip", &["link", "set", BRIDGE, "up"])?;
    // Service addresses are rewritten by kube-proxy before routing; should a rule be missing,
    // this route keeps the packet on the bridge instead of sending it off the machine.
    run("ip", &["route", "add", SERVICE_RANGE, "dev", BRIDGE])?;
    // A pod's connection to a Service whose pod shares the bridge is rewritten by kube-proxy
    // only if bridged frames pass iptables (restored with the other sysctls).
    std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
        .context("letting bridged traffic through iptables (br_netfilter)")?;
    isolate_pods()
}

fn isolate_pods() -> Result<()> {
    let mangle = |args: &[&str]| {
        let mut full = vec!["-w", "-t", "mangle"];
        full.extend_from_slice(args);
        run("iptables", &full)
    };
    mangle(&["-N", ISOLATION_CHAIN])?;
    let node = NODE_IP.to_string();
    for allowed in [POD_RANGE, SERVICE_RANGE, node.as_str()] {
        mangle(&["-A", ISOLATION_CHAIN, "-d", allowed, "-j", "RETURN"])?;
    }
    mangle(&["-A", ISOLATION_CHAIN, "-j", "DROP"])?;
    mangle(&[
        "-I",
        "PREROUTING",
        "1",
        "-s",
        POD_RANGE,
        "-j",
        ISOLATION_CHAIN,
    ])?;
    Ok(())
}

/// Removes what [`up`] made; parts that are already gone are fine.
pub fn down() -> Vec<String> {
    let mut failures = Vec::new();
    let mut attempt = |program: &str, args: &[&str]| {
        if let Err(err) = run(program, args) {
            failures.push(format!("{err:#}"));
        }
    };
    if chain_exists(ISOLATION_CHAIN) {
        // A rerun after a crash may have inserted the jump twice; bounded, in case -D fails.
        for _ in 0..4 {
            if !jump_exists() {
                break;
            }
            attempt(
                "iptables",
                &[
                    "-w",
                    "-t",
                    "mangle",
                    "-D",
                    "PREROUTING",
                    "-s",
                    POD_RANGE,
                    "-j",
                    ISOLATION_CHAIN,
                ],
            );
        }
        attempt("iptables", &["-w", "-t", "mangle", "-F", ISOLATION_CHAIN]);
        attempt("iptables", &["-w", "-t", "mangle", "-X", ISOLATION_CHAIN]);
    }
    if bridge_exists() {
        // The Service route goes with the bridge.
        attempt("ip", &["link", "delete", BRIDGE]);
    }
    failures
}

pub fn bridge_exists() -> bool {
    run("ip", &["link", "show", BRIDGE]).is_ok()
}

fn chain_exists(chain: &str) -> bool {
    run("iptables", &["-w", "-t", "mangle", "-S", chain]).is_ok()
}

fn jump_exists() -> bool {
    run(
        "iptables",
        &[
            "-w",
            "-t",
            "mangle",
            "-C",
            "PREROUTING",
            "-s",
            POD_RANGE,
            "-j",
            ISOLATION_CHAIN,
        ],
    )
    .is_ok()
}
