//! Which container and Kubernetes pod a process belongs to, without asking an API server: the
//! container runtimes name each container's cgroup after its id, the kubelet names each pod's
//! cgroup after its uid, and keeps `/var/log/pods/<namespace>_<name>_<uid>` for every pod on
//! the node.
//!
//! Cgroup layouts recognised (v2 `0::<path>` lines and v1 `<n>:<controllers>:<path>` lines):
//! - kubelet, systemd driver: `/kubepods.slice/kubepods-burstable.slice/`
//!   `kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope` (also `crio-`,
//!   `docker-`; guaranteed pods sit directly under `kubepods.slice`; kind nodes prefix `kubelet-`);
//! - kubelet, cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>` (cri-o: `crio-<id>`);
//! - docker: `/system.slice/docker-<id>.scope`, `/docker/<id>`; podman: `libpod-<id>.scope`,
//!   `/libpod_parent/libpod-<id>`; nerdctl: `nerdctl-<id>.scope`.
//!
//! The container runtime's own helpers (`crio-conmon-<id>`, `libpod-conmon-<id>`) run outside
//! the container and are not attributed to it.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The container a process runs in, as its cgroup path tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// 64 lowercase hex digits.
    pub id: String,
    /// `docker`, `containerd`, `cri-o` or `podman`, when the path says which.
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod's uid, with dashes (`1234abcd-5678-…`), or the 32-hex-digit uid of a
    /// static pod.
    pub pod_uid: Option<String>,
}

/// A pod on this node, as the kubelet's log directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub uid: String,
    pub name: String,
    pub namespace: String,
}

/// The container in a `/proc/PID/cgroup` text, or `None` for a process outside any container.
/// On a hybrid host the unified (v2) line is preferred; every line is tried.
pub fn container_from_cgroup(cgroup_file_text: &str) -> Option<ContainerRef> {
    let mut paths: Vec<(bool, &str)> = cgroup_file_text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let hierarchy = fields.next()?;
            let _controllers = fields.next()?;
            Some((hierarchy != "0", fields.next()?))
        })
        .collect();
    paths.sort_by_key(|(v1, _)| *v1);
    paths.into_iter().find_map(|(_, p)| container_from_path(p))
}

/// The container a cgroup path (`/kubepods/…`, relative to the cgroup root) names: the innermost
/// one, for a container in a container (a kind node, docker-in-docker).
pub fn container_from_path(path: &str) -> Option<ContainerRef> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, id, mut runtime) = parts
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| container_component(c).map(|(id, rt)| (i, id, rt)))?;
    if runtime.is_none() && at > 0 && parts[at - 1] == "docker" {
        runtime = Some("docker");
    }
    // The pod is the nearest one above the container; a pod below it would be one the
    // container runs (a kind node's), not the one this process is in.
    let pod_uid = parts[..at].iter().rev().find_map(|c| pod_component(c));
    Some(ContainerRef {
        id: id.to_owned(),
        runtime,
        pod_uid,
    })
}

/// The container of a live process, from `/proc/<tgid>/cgroup`.
pub fn container_of_process(tgid: u32) -> Option<ContainerRef> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
    container_from_cgroup(&text)
}

/// Cgroup name prefixes before a container id (systemd scopes and cgroupfs directories alike).
const RUNTIME_PREFIXES: [(&str, Option<&str>); 6] = [
    ("cri-containerd-", Some("containerd")),
    ("crio-", Some("cri-o")),
    ("docker-", Some("docker")),
    ("libpod-", Some("podman")),
    ("nerdctl-", Some("containerd")),
    ("", None),
];

fn container_component(c: &str) -> Option<(&str, Option<&'static str>)> {
    let name = c.strip_suffix(".scope").unwrap_or(c);
    RUNTIME_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        is_container_id(id).then_some((id, *runtime))
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod uid in a kubelet cgroup name: `pod<uid>` (cgroupfs) or `…-pod<uid_with_underscores>
/// .slice` (systemd, which reserves `-` for nesting).
fn pod_component(c: &str) -> Option<String> {
    let uid = match c.strip_suffix(".slice") {
        Some(slice) => slice[slice.rfind("-pod")? + 4..].replace('_', "-"),
        None => c.strip_prefix("pod")?.to_owned(),
    };
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (`8-4-4-4-12` hex digits) or, for a static pod, the 32 hex digits of its hash.
fn is_pod_uid(s: &str) -> bool {
    let hex = |p: &str| p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lens == [8, 4, 4, 4, 12] || lens == [32]) && groups.iter().all(|g| hex(g))
}

/// Pod names by uid, from the kubelet's `var/log/pods` directory under a host root (`/`, or
/// where the host is mounted when fimd runs in a pod). Cached; a miss lists the directory again
/// at most once per refresh interval, since a new pod's uid appears before we learn its name.
#[derive(Debug)]
pub struct PodDirectory {
    dir: PathBuf,
    refresh: Duration,
    cache: Mutex<PodCache>,
}

#[derive(Debug, Default)]
struct PodCache {
    pods: HashMap<String, PodRef>,
    listed_at: Option<Instant>,
}

/// How often a miss may list the pod directory again.
pub const POD_REFRESH: Duration = Duration::from_secs(5);
/// Pods remembered at most. A node runs ~110 by default, a few hundred when tuned.
const MAX_PODS: usize = 4096;

impl PodDirectory {
    pub fn new(host_root: PathBuf) -> PodDirectory {
        Self::with_refresh(host_root, POD_REFRESH)
    }

    pub fn with_refresh(host_root: PathBuf, refresh: Duration) -> PodDirectory {
        PodDirectory {
            dir: host_root.join("var/log/pods"),
            refresh,
            cache: Mutex::new(PodCache::default()),
        }
    }

    /// The pod with this uid on this node, if the kubelet has one. May list a directory: call it
    /// where blocking is allowed.
    pub fn lookup(&self, uid: &str) -> Option<PodRef> {
        // A panic elsewhere while holding the lock leaves a cache that is still consistent.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pod) = cache.pods.get(uid) {
            return Some(pod.clone());
        }
        if cache.listed_at.is_some_and(|t| t.elapsed() < self.refresh) {
            return None;
        }
        // Listed whole: pods gone from the node leave the cache too.
        cache.pods = list_pods(&self.dir);
        cache.listed_at = Some(Instant::now());
        cache.pods.get(uid).cloned()
    }
}

/// `<namespace>_<name>_<uid>` directories; neither part may hold `_` (Kubernetes names are DNS
/// labels and subdomains). A missing directory (not a Kubernetes node) lists nothing.
fn list_pods(dir: &Path) -> HashMap<String, PodRef> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            // Not a name the kubelet makes: skipped, not guessed at.
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.split('_');
            let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || namespace.is_empty() || pod.is_empty() || uid.is_empty() {
                return None;
            }
            Some((
                uid.to_owned(),
                PodRef {
                    uid: uid.to_owned(),
                    name: pod.to_owned(),
                    namespace: namespace.to_owned(),
                },
            ))
        })
        .take(MAX_PODS)
        .collect()
}

/// ECS `process.*`, `user.id` and `container.*`/`orchestrator.*`/`kubernetes.*` for the task a
/// kernel record named: `tgid` the process, `pid` the thread, `thread_name` its `comm`, `uid`
/// its user (`u32::MAX`: unknown, left out). The executable, the process name and the container
/// come from /proc and the cgroup while the process lives; the record's names otherwise.
pub fn process_fields(
    tgid: u32,
    pid: u32,
    thread_name: &str,
    uid: u32,
    pods: &PodDirectory,
) -> Vec<(&'static str, Value)> {
    Actor::of(tgid, pid, thread_name, uid, pods).ecs()
}

/// The task a kernel record named as a change's writer, with what /proc and the cgroup tell of
/// it (see [`process_fields`]): the typed source of an alert's `process.*`, `user.id` and
/// container fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `process.pid`: the thread group id.
    pub pid: u32,
    /// `process.name`: the group leader's `comm`, else the thread's.
    pub name: String,
    /// `process.thread.id`: the kernel `pid`.
    pub thread_id: u32,
    /// `process.thread.name`: the thread's `comm`.
    pub thread_name: String,
    /// `process.executable`, while the process lives.
    pub executable: Option<String>,
    /// `user.id`; `None` when the sensor could not learn it.
    pub uid: Option<u32>,
    /// The container and, when the kubelet named it, its pod.
    pub container: Option<(ContainerRef, Option<PodRef>)>,
}

impl Actor {
    /// Reads /proc and the cgroup of `tgid` (see [`process_fields`] for the arguments).
    pub fn of(tgid: u32, pid: u32, thread_name: &str, uid: u32, pods: &PodDirectory) -> Actor {
        use std::os::unix::ffi::OsStrExt;
        let executable = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .map(|p| crate::paths::path_text(p.as_os_str().as_bytes()).0);
        // The record names the thread (an io_uring worker is "iou-wrk-N"); the process name is
        // the thread group leader's, while it lives.
        let name = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| thread_name.to_owned());
        let container = container_of_process(tgid).map(|c| {
            let pod = c.pod_uid.as_deref().and_then(|uid| pods.lookup(uid));
            (c, pod)
        });
        Actor {
            pid: tgid,
            name,
            thread_id: pid,
            thread_name: thread_name.to_owned(),
            executable,
            uid: (uid != u32::MAX).then_some(uid),
            container,
        }
    }

    /// The ECS fields, top-level key and value: `process`, then `user` when the uid is known,
    /// then `container` (and `orchestrator`, `kubernetes` for a pod) as [`ecs_fields`] gives them.
    pub fn ecs(&self) -> Vec<(&'static str, Value)> {
        let mut process = json!({
            "pid": self.pid,
            "name": self.name,
            "thread": { "id": self.thread_id, "name": self.thread_name },
        });
        if let Some(exe) = &self.executable {
            process["executable"] = json!(exe);
        }
        let mut out = vec![("process", process)];
        if let Some(uid) = self.uid {
            out.push(("user", json!({ "id": uid.to_string() })));
        }
        if let Some((c, pod)) = &self.container {
            out.extend(container_ecs(c, pod.as_ref()));
        }
        out
    }
}

/// `container`, and for a container in a pod `orchestrator` and `kubernetes` (see [`ecs_fields`]).
fn container_ecs(c: &ContainerRef, pod: Option<&PodRef>) -> Vec<(&'static str, Value)> {
    let mut container = json!({ "id": c.id });
    if let Some(rt) = c.runtime {
        container["runtime"] = json!(rt);
    }
    let Some(uid) = pod.map(|p| p.uid.as_str()).or(c.pod_uid.as_deref()) else {
        return vec![("container", container)];
    };
    let mut resource = json!({ "type": "pod", "id": uid });
    let mut orchestrator = json!({ "type": "kubernetes" });
    let mut kubernetes = json!({ "pod": { "uid": uid } });
    if let Some(p) = pod {
        resource["name"] = json!(p.name);
        orchestrator["namespace"] = json!(p.namespace);
        kubernetes["pod"]["name"] = json!(p.name);
        kubernetes["namespace"] = json!(p.namespace);
    }
    orchestrator["resource"] = resource;
    vec![
        ("container", container),
        ("orchestrator", orchestrator),
        ("kubernetes", kubernetes),
    ]
}

/// ECS fields for an alert, as an object whose top-level keys are to be merged into it:
///
/// ```json
/// { "container": { "id": "…", "runtime": "containerd" },
///   "orchestrator": { "type": "kubernetes", "namespace": "prod",
///                     "resource": { "type": "pod", "id": "<uid>", "name": "web-0" } },
///   "kubernetes": { "namespace": "prod", "pod": { "uid": "<uid>", "name": "web-0" } } }
/// ```
///
/// `container.runtime` is left out when unknown; `orchestrator` and `kubernetes` appear for a
/// container in a pod, with the name and namespace when `pod` resolved them. `kubernetes.*` are
/// the fields Elastic's Kubernetes integration uses, so alerts join its dashboards.
pub fn ecs_fields(c: &ContainerRef, pod: Option<&PodRef>) -> Value {
    let fields = container_ecs(c, pod).into_iter();
    Value::Object(fields.map(|(k, v)| (k.to_owned(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a3c6a5e2b1d0f9e8d7c6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a3928170";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-5678-90ab-cdef-1234567890ab";
    const UID_SYSTEMD: &str = "1234abcd_5678_90ab_cdef_1234567890ab";

    fn container(text: &str) -> ContainerRef {
        container_from_cgroup(text).unwrap_or_else(|| panic!("no container in {text:?}"))
    }

    #[test]
    fn kubelet_systemd_driver_each_runtime_and_qos() {
        for (scope, runtime) in [
            (format!("cri-containerd-{ID}.scope"), Some("containerd")),
            (format!("crio-{ID}.scope"), Some("cri-o")),
            (format!("docker-{ID}.scope"), Some("docker")),
        ] {
            for qos in [
                format!("kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"),
                format!("kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice"),
                format!("kubepods-pod{UID_SYSTEMD}.slice"), // guaranteed
            ] {
                let text = format!("0::/kubepods.slice/{qos}/{scope}\n");
                let c = container(&text);
                assert_eq!(c.id, ID, "{text}");
                assert_eq!(c.runtime, runtime, "{text}");
                assert_eq!(c.pod_uid.as_deref(), Some(UID), "{text}");
            }
        }
    }

    #[test]
    fn kubelet_cgroupfs_driver_v1_lines() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        );
        let c = container(&text);
        assert_eq!(
            (c.id.as_str(), c.runtime, c.pod_uid.as_deref()),
            (ID, None, Some(UID))
        );
        // cri-o names the directory; a static pod's uid is a 32-digit hash.
        let hash = "6f1e4a2b3c4d5e6f708192a3b4c5d6e7";
        let c = container(&format!("0::/kubepods/besteffort/pod{hash}/crio-{ID}\n"));
        assert_eq!(
            (c.id.as_str(), c.runtime, c.pod_uid.as_deref()),
            (ID, Some("cri-o"), Some(hash))
        );
    }

    #[test]
    fn plain_docker_and_podman_have_no_pod() {
        for (text, runtime) in [
            (format!("0::/system.slice/docker-{ID}.scope\n"), "docker"),
            (format!("4:memory:/docker/{ID}\n0::/\n"), "docker"),
            (
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                "podman",
            ),
            (
                format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n"),
                "podman",
            ),
        ] {
            let c = container(&text);
            assert_eq!(
                (c.id.as_str(), c.runtime, c.pod_uid),
                (ID, Some(runtime), None),
                "{text}"
            );
        }
    }

    #[test]
    fn hybrid_host_prefers_the_unified_line() {
        let text = format!(
            "5:devices:/system.slice/docker-{ID2}.scope\n\
             0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(container(&text).id, ID);
    }

    #[test]
    fn innermost_container_and_its_pod_on_a_kind_node() {
        // A kind node is a docker container running a kubelet; the pod's container is inside.
        let text = format!(
            "0::/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/\
             cri-containerd-{ID}.scope\n"
        );
        let c = container(&text);
        assert_eq!(
            (c.id.as_str(), c.runtime, c.pod_uid.as_deref()),
            (ID, Some("containerd"), Some(UID))
        );
        // The node's own processes are in the node container, not in a pod.
        let c = container(&format!("0::/system.slice/docker-{ID2}.scope/kubelet.slice\n"));
        assert_eq!((c.id.as_str(), c.pod_uid), (ID2, None));
    }

    #[test]
    fn not_a_container() {
        for text in [
            "0::/\n".to_owned(),
            "0::/user.slice/user-0.slice/session-3.scope\n".to_owned(),
            "0::/init.scope\n".to_owned(),
            // The runtime's monitor process, outside the container.
            format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope\n"),
            format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
            // Not 64 lowercase hex digits.
            format!("0::/docker/{}\n", &ID[..63]),
            format!("0::/docker/{}\n", ID.to_uppercase()),
            // A pod's cgroup without a container (the kubelet's own accounting).
            format!("0::/kubepods/burstable/pod{UID}\n"),
            String::new(),
            "garbage without colons\n".to_owned(),
        ] {
            assert_eq!(container_from_cgroup(&text), None, "{text:?}");
        }
    }

    #[test]
    fn namespaced_view_of_another_cgroup() {
        // Seen from inside a cgroup namespace, other cgroups are relative to its root.
        let c = container(&format!("0::/../../kubepods/burstable/pod{UID}/{ID}\n"));
        assert_eq!((c.id.as_str(), c.pod_uid.as_deref()), (ID, Some(UID)));
    }

    #[test]
    fn malformed_pod_uids_are_ignored() {
        for pod in [
            "podnot-a-uid".to_owned(),
            format!("pod{}", UID.to_uppercase()),
            format!("pod{UID}0"),
        ] {
            let c = container(&format!("0::/kubepods/burstable/{pod}/{ID}\n"));
            assert_eq!(c.pod_uid, None, "{pod}");
        }
    }

    #[test]
    fn pod_directory_lists_resolves_and_refreshes() {
        use std::os::unix::ffi::OsStrExt;
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("var/log/pods");
        std::fs::create_dir_all(pods.join(format!("kube-system_coredns-5d78c9869d-abcde_{UID}"))).unwrap();
        // Not the kubelet's: a non-UTF-8 name, too few or too many parts, a plain file.
        std::fs::create_dir(pods.join(std::ffi::OsStr::from_bytes(b"ns_\xff\xfe_0000"))).unwrap();
        std::fs::create_dir(pods.join("lonely")).unwrap();
        std::fs::create_dir(pods.join("a_b_c_d")).unwrap();
        std::fs::write(pods.join(format!("default_file_{}", "f".repeat(32))), b"").unwrap();

        let dir = PodDirectory::with_refresh(root.path().to_owned(), Duration::from_secs(3600));
        assert_eq!(
            dir.lookup(UID),
            Some(PodRef {
                uid: UID.into(),
                name: "coredns-5d78c9869d-abcde".into(),
                namespace: "kube-system".into(),
            })
        );
        assert_eq!(dir.lookup("0000"), None);
        assert_eq!(dir.lookup(&"f".repeat(32)), None);
        assert_eq!(dir.lookup("c_d"), None);

        // A pod started after the listing: unknown until the refresh interval has passed.
        let late = "abcdef01-2345-6789-abcd-ef0123456789";
        std::fs::create_dir(pods.join(format!("prod_web-0_{late}"))).unwrap();
        assert_eq!(dir.lookup(late), None);
        let eager = PodDirectory::with_refresh(root.path().to_owned(), Duration::ZERO);
        assert_eq!(eager.lookup(late).map(|p| p.name), Some("web-0".to_owned()));
        // A pod gone from the node leaves the cache at the next listing.
        std::fs::remove_dir(pods.join(format!("prod_web-0_{late}"))).unwrap();
        assert_eq!(eager.lookup("not-there"), None);
        assert_eq!(eager.lookup(late), None);
        // Not a Kubernetes node at all.
        let none = PodDirectory::with_refresh(root.path().join("nothing"), Duration::ZERO);
        assert_eq!(none.lookup(UID), None);
    }

    #[test]
    fn ecs_fields_shapes() {
        let plain = ContainerRef {
            id: ID.into(),
            runtime: None,
            pod_uid: None,
        };
        assert_eq!(ecs_fields(&plain, None), json!({ "container": { "id": ID } }));

        let in_pod = container(&format!(
            "0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope\n"
        ));
        // The uid alone when the pod's name is not known (yet).
        assert_eq!(
            ecs_fields(&in_pod, None),
            json!({
                "container": { "id": ID, "runtime": "containerd" },
                "orchestrator": { "type": "kubernetes", "resource": { "type": "pod", "id": UID } },
                "kubernetes": { "pod": { "uid": UID } },
            })
        );
        let pod = PodRef {
            uid: UID.into(),
            name: "web-0".into(),
            namespace: "prod".into(),
        };
        assert_eq!(
            ecs_fields(&in_pod, Some(&pod)),
            json!({
                "container": { "id": ID, "runtime": "containerd" },
                "orchestrator": {
                    "type": "kubernetes",
                    "namespace": "prod",
                    "resource": { "type": "pod", "id": UID, "name": "web-0" },
                },
                "kubernetes": { "namespace": "prod", "pod": { "uid": UID, "name": "web-0" } },
            })
        );
    }

    #[test]
    fn this_process_is_read_from_proc() {
        // Whatever this test runs in, reading our own cgroup file must agree with parsing it.
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(
            container_of_process(std::process::id()),
            container_from_cgroup(&text)
        );
    }

    #[test]
    fn process_fields_read_proc_while_the_process_lives() {
        let pods = PodDirectory::new(PathBuf::from("/"));
        let me = std::process::id();
        let fields = process_fields(me, me, "thread-name", 1000, &pods);
        let process = &fields.iter().find(|(k, _)| *k == "process").expect("process").1;
        assert_eq!(process["pid"], json!(me));
        assert_eq!(process["thread"]["name"], json!("thread-name"));
        assert!(process["executable"].as_str().is_some_and(|e| e.starts_with('/')));
        assert_ne!(
            process["name"],
            json!("thread-name"),
            "the leader's name from /proc"
        );
        assert!(
            fields
                .iter()
                .any(|(k, v)| *k == "user" && v["id"] == json!("1000"))
        );
        // The process gone: the record's names stand, and an unknown uid is left out.
        let gone = process_fields(u32::MAX - 1, 7, "iou-wrk-7", u32::MAX, &pods);
        assert_eq!(gone[0].1["name"], json!("iou-wrk-7"));
        assert!(gone[0].1.get("executable").is_none());
        assert!(!gone.iter().any(|(k, _)| *k == "user"));
    }
}
