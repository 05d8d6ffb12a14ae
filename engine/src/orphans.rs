//! What an attempt leaves on this machine, and how it is found again after a
//! crash: every process a step starts carries the attempt's token in its
//! environment (`CA_A2A_FLOW_ATTEMPT=run/step/attempt`), inherited by whatever
//! it forks, `setsid` included; every file it writes for the engine lives in the
//! attempt's private scratch directory. When the engine takes a run over, it
//! kills the processes of the attempts the dead process left `running` and
//! removes the run's scratch directories, before any new attempt starts.
//!
//! Only this machine is searched: a process on another host is out of reach
//! (its own engine's guard kills it when that engine dies).

use std::path::{Path, PathBuf};

/// The environment variable that marks every process of an attempt.
pub const ATTEMPT_ENV: &str = "CA_A2A_FLOW_ATTEMPT";

/// The token of one attempt: stable across processes, so a resume recomputes it.
pub fn attempt_token(run: &str, step: &str, attempt: u32) -> String {
    format!("{run}/{step}/{attempt}")
}

/// SIGKILLs every process on this machine whose environment holds
/// `var=value`, in rounds until none is left (a process may fork while the
/// first round runs). Returns how many were killed.
pub fn kill_tagged(var: &str, value: &str) -> usize {
    let needle = format!("{var}={value}");
    let me = std::process::id();
    let mut killed = std::collections::BTreeSet::new();
    for _ in 0..5 {
        // A process killed in an earlier round may not have died yet.
        let found: Vec<i32> = tagged(&needle, me).into_iter().filter(|pid| !killed.contains(pid)).collect();
        if found.is_empty() {
            break;
        }
        for pid in &found {
            // Stopped first, so none forks again between our kills.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(*pid, libc::SIGSTOP);
            }
        }
        for pid in &found {
            // SAFETY: as above.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        killed.extend(found);
    }
    killed.len()
}

fn tagged(needle: &str, me: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid as u32 != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|entry| entry == needle.as_bytes()))
        })
        .collect()
}

/// Where the scratch directories of a run's attempts live: private to this
/// user (0700), below the system's temporary directory.
pub fn run_scratch(run: &str) -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("ca-a2a-flow-{uid}")).join(sanitize(run))
}

/// The private scratch directory of one attempt, created empty (0700).
pub fn attempt_scratch(run: &str, step: &str, attempt: u32) -> std::io::Result<PathBuf> {
    let dir = attempt_scratch_path(run, step, attempt);
    create_private(&dir)?;
    Ok(dir)
}

/// Where [`attempt_scratch`] puts an attempt's directory (not created).
pub fn attempt_scratch_path(run: &str, step: &str, attempt: u32) -> PathBuf {
    run_scratch(run).join(format!("{}-{attempt}", sanitize(step)))
}

/// Removes what a run's attempts left in their scratch directories.
pub fn sweep_scratch(run: &str) {
    let _ = std::fs::remove_dir_all(run_scratch(run));
}

fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    if let Some(parent) = dir.parent() {
        builder.create(parent)?;
        // The user's root may predate us with other modes: make it private.
        if let Some(root) = parent.parent() {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    builder.create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_carrying_the_token_is_killed_and_others_are_not() {
        let token = format!("test-{}-{}", std::process::id(), fastrand::u32(..));
        let mut marked = std::process::Command::new("sleep").arg("30").env(ATTEMPT_ENV, &token).spawn().unwrap();
        let mut other = std::process::Command::new("sleep").arg("30").env(ATTEMPT_ENV, "someone-else").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(tagged(&format!("{ATTEMPT_ENV}={token}"), std::process::id()), vec![marked.id() as i32]);
        assert_eq!(kill_tagged(ATTEMPT_ENV, &token), 1);
        assert!(!marked.wait().unwrap().success(), "the marked process was killed");
        assert!(other.try_wait().unwrap().is_none(), "the other one still runs");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn an_attempt_scratch_directory_is_private_and_swept_with_its_run() {
        use std::os::unix::fs::PermissionsExt;
        let run = format!("r-test-{}", fastrand::u32(..));
        let dir = attempt_scratch(&run, "a/b", 2).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::write(dir.join("out"), "x").unwrap();
        sweep_scratch(&run);
        assert!(!run_scratch(&run).exists());
    }
}
