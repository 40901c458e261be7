//! A real collectd (Debian's collectd-core) under a test's control: its own config in a
//! temporary directory, `Interval 1`, the network plugin aimed at the receivers under test
//! (plain, Sign or Encrypt), and a unix socket for `collectdctl putval` of exact values.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{poll_until, temp_dir, ChildGuard};

/// How long collectd may take to start and to stop.
const START: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(30);

/// The `Hostname` collectd reports.
pub const HOST: &str = "bucky-test";

/// One `<Server>` of collectd's network plugin.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    port: u16,
    level: &'static str,
    user: &'static str,
    password: &'static str,
}

impl Server {
    /// A server at `port` with SecurityLevel `level` (None, Sign or Encrypt).
    pub fn new(port: u16, level: &'static str, user: &'static str, password: &'static str) -> Self {
        Server {
            port,
            level,
            user,
            password,
        }
    }
}

/// A collectd in the foreground under the test's control, with a unix socket for putval.
#[derive(Debug)]
pub struct Collectd {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    child: ChildGuard,
    log: PathBuf,
}

impl Collectd {
    /// Starts collectd sending to `servers`; returns once its control socket answers.
    pub fn start(servers: &[Server]) -> Collectd {
        let dir = temp_dir("collectd");
        let d = dir.path();
        let mut conf = format!(
            "Hostname \"{HOST}\"\nFQDNLookup false\nInterval 1\n\
             BaseDir \"{0}\"\nPIDFile \"{0}/collectd.pid\"\n\
             TypesDB \"/usr/share/collectd/types.db\"\n\
             LoadPlugin logfile\n<Plugin logfile>\n  LogLevel info\n  File STDERR\n</Plugin>\n\
             LoadPlugin load\n\
             LoadPlugin unixsock\n<Plugin unixsock>\n  SocketFile \"{0}/sock\"\n  SocketGroup \"root\"\n  SocketPerms \"0660\"\n</Plugin>\n\
             <LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>\n<Plugin network>\n",
            d.display()
        );
        for s in servers {
            conf.push_str(&format!(
                "  <Server \"127.0.0.1\" \"{}\">\n    SecurityLevel {}\n",
                s.port, s.level
            ));
            if s.level != "None" {
                conf.push_str(&format!(
                    "    Username \"{}\"\n    Password \"{}\"\n",
                    s.user, s.password
                ));
            }
            conf.push_str("  </Server>\n");
        }
        conf.push_str("</Plugin>\n");
        std::fs::write(d.join("collectd.conf"), conf).unwrap();
        let log = d.join("collectd.log");
        let mut cmd = Command::new("collectd");
        cmd.args(["-f", "-C"])
            .arg(d.join("collectd.conf"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("collectd.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = ChildGuard::spawn("collectd", &mut cmd);
        let sock = d.join("sock");
        let ready = poll_until(START, || {
            assert!(
                child.is_running(),
                "collectd exited:\n{}",
                crate::file_tail(&log, 30)
            );
            sock.exists() && ctl(&sock, &["listval"]).status.success()
        });
        assert!(
            ready,
            "collectd did not open its socket:\n{}",
            crate::file_tail(&log, 30)
        );
        Collectd {
            _dir: dir,
            sock,
            child,
            log,
        }
    }

    /// The end of collectd's log, for panic messages.
    pub fn log_tail(&self) -> String {
        crate::file_tail(&self.log, 30)
    }

    /// `putval HOST/ID interval=1 TIME:VALUES`.
    pub fn putval(&self, id: &str, time: i64, values: &str) {
        let out = ctl(
            &self.sock,
            &[
                "putval",
                &format!("{HOST}/{id}"),
                "interval=1",
                &format!("{time}:{values}"),
            ],
        );
        assert!(
            out.status.success(),
            "putval {id} {time}:{values}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGTERM; collectd flushes its network buffer on the way out.
    pub fn stop(&mut self) {
        self.child.terminate();
        assert!(
            self.child.wait_timeout(EXIT).is_some(),
            "collectd did not exit:\n{}",
            self.log_tail()
        );
    }
}

/// Runs `collectdctl -s SOCK ARGS...`.
pub fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new("collectdctl")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .expect("run collectdctl")
}
