//! Starting a server program on a free port, for the servers that take a port number rather
//! than a listener (Distribution, the reference Xet CAS). A port chosen by binding port 0 and
//! letting it go can be taken by another test's server before the program binds it; a program
//! that then fails to bind would leave its test talking to somebody else's server, which works
//! until that test ends. So a start counts only once the program itself holds the port.

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

/// How many ports a program is given before its start is given up.
const TRIES: usize = 5;

/// Tries a free port in `spawn` (given the port, it starts the program) until the program
/// listens on it itself; panics with `what` and `log()` when it never does.
pub fn spawn_on_free_port(
    what: &str,
    mut spawn: impl FnMut(u16) -> Child,
    log: impl Fn() -> String,
) -> (Child, u16) {
    for _ in 0..TRIES {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let mut child = spawn(port);
        if listening_or_exited(&mut child, port, what, &log) {
            return (child, port);
        }
    }
    panic!(
        "{what} exited on each of the {TRIES} ports it was given (each taken by another program, or it fails on its own): {}",
        log()
    );
}

/// Waits until `child` listens on `port` (true) or exits (false: its bind failed, or it
/// failed otherwise); panics when it does neither within 20 s.
fn listening_or_exited(child: &mut Child, port: u16, what: &str, log: impl Fn() -> String) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if listens(child.id(), port) {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not listen on port {port} within 20 s: {}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` holds a socket listening on 127.0.0.1 (or any address) at `port`:
/// the listening socket's inode in `/proc/net/tcp` is one of the process's open files.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let listening = cols.get(3) == Some(&"0A");
            let inode = cols.get(9)?;
            (listening && u16::from_str_radix(local_port, 16) == Ok(port))
                .then(|| format!("socket:[{inode}]"))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

#[test]
fn a_program_counts_as_started_only_on_a_port_it_holds_itself() {
    // A stand-in for a server: Python listening on the port it is given.
    let python = "python3";
    let server = "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',int(sys.argv[1])))\ns.listen()\ntime.sleep(60)";
    let (mut child, port) = spawn_on_free_port(
        "the stand-in server",
        |port| {
            std::process::Command::new(python)
                .args(["-c", server, &port.to_string()])
                .spawn()
                .unwrap()
        },
        String::new,
    );
    assert!(listens(child.id(), port));
    // Another process listening there is not this one.
    assert!(!listens(std::process::id(), port));
    // A port held by this test process is found as ours, not as the child's.
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours_port = ours.local_addr().unwrap().port();
    assert!(listens(std::process::id(), ours_port));
    assert!(!listens(child.id(), ours_port));
    let _ = child.kill();
    let _ = child.wait();

    // The first port is taken (here by this test) before the program binds it: the program
    // fails, and the start goes on with another port.
    let mut taken = None;
    let mut tries = Vec::new();
    let (mut child, port) = spawn_on_free_port(
        "the stand-in server",
        |port| {
            if taken.is_none() {
                taken = Some(TcpListener::bind(("127.0.0.1", port)).unwrap());
            }
            tries.push(port);
            std::process::Command::new(python)
                .args(["-c", server, &port.to_string()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        },
        String::new,
    );
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(port, tries[1]);
    assert!(listens(child.id(), port));
    let _ = child.kill();
    let _ = child.wait();
}
