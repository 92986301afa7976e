//! The receiver against the second round of attacks: clients that never read, half-close or
//! vanish; a log nobody reads; a SIGHUP; bodies that cannot be authenticated or are huge;
//! Coveralls' own text; ten thousand projects; a projects file built to crash a parser.
//! Each test is bounded in count and time, on loopback.

use std::time::{Duration, Instant};

use crate::receiver::{Receiver, SECRET, workflow_event};
use crate::support::{CLOSED, Server, json};

/// A projects file of `count` projects, each with a slug and a token of its own.
fn many_projects(count: usize) -> String {
    let mut toml = String::from("endpoint = \"{endpoint}\"\n");
    for i in 0..count {
        toml += &format!(
            "[[project]]\nname = \"p{i}\"\ncircleci_slug = \"gh/many/p{i}\"\nrepo_token = \
             \"token-{i:05}-of-many-projects\"\n"
        );
    }
    toml
}

/// CPU time process `pid` has used, in clock ticks (Linux).
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The CPU ticks 100 deliveries for a project nobody configured cost the receiver.
#[cfg(target_os = "linux")]
fn cpu_of_deliveries(receiver: &Receiver) -> u64 {
    let before = cpu_ticks(receiver.pid());
    for i in 0..100 {
        let body = workflow_event(
            &format!("e-{i}"),
            &format!("wf-{i}"),
            "gh/nobody/configured",
        );
        let (status, answer) = receiver.circleci(SECRET, "workflow-completed", &body);
        assert_eq!(status, 202, "{answer}");
    }
    cpu_ticks(receiver.pid()) - before
}

#[test]
fn ten_thousand_projects_start_at_once_and_cost_nothing_per_delivery() {
    let coveralls = Server::start(vec![json(200, CLOSED)]);
    let env = [("CIRCLECI_WEBHOOK_SECRET", SECRET)];
    let started = Instant::now();
    let many = Receiver::with_projects(&coveralls, &many_projects(10_000), &env)
        .secret("token-09999-of-many-projects");
    assert_eq!(many.get("/healthz"), 200);
    let took = started.elapsed();
    println!("10,000 projects: first answer after {took:?}");
    assert!(took < Duration::from_secs(8), "first answer after {took:?}");
    let body = workflow_event("e-last", "wf-last", "gh/many/p9999");
    let (status, answer) = many.circleci(SECRET, "workflow-completed", &body);
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("p9999")),
        "{answer}"
    );
    #[cfg(target_os = "linux")]
    {
        let one = Receiver::with_projects(&coveralls, &many_projects(1), &env);
        let (cost_one, cost_many) = (cpu_of_deliveries(&one), cpu_of_deliveries(&many));
        println!("100 deliveries: {cost_one} ticks with one project, {cost_many} with 10,000");
        assert!(
            cost_many <= 2 * cost_one + 20,
            "{cost_one} ticks, then {cost_many}"
        );
    }
}
