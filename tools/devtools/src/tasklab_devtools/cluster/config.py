"""The node's layout, addresses and the components' configuration files.

Addresses live only inside the node's network namespace: the node is 10.88.0.2 (on
its loopback), pods get 10.244.0.0/24 on the bridge ``cni0``, Services 10.96.0.0/16
(the apiserver 10.96.0.1, the cluster DNS 10.96.0.10, as on kind). The host reaches
the apiserver and the published NodePorts through :mod:`.forward` on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasklab_devtools.cluster.pki import Pki, write_kubeconfig

__all__ = ["Layout"]

NODE_IP = "10.88.0.2"
CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
API_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
#: The sandbox image containerd pins (built here, see .images).
PAUSE_IMAGE = "tasklab.local/pause:3.10"


@dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its files (``state``) and what it is called."""

    name: str
    state: Path

    @property
    def node_name(self) -> str:
        return f"{self.name}-control-plane"

    @property
    def context(self) -> str:
        return self.name

    def sub(self, *parts: str) -> Path:
        return self.state.joinpath(*parts)

    @property
    def pki(self) -> Pki:
        return Pki(self.sub("pki"))

    @property
    def logs(self) -> Path:
        return self.sub("logs")

    @property
    def etc(self) -> Path:
        return self.sub("etc")

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig for the host (through the forwarded port)."""
        return self.sub("kubeconfig")

    @property
    def ports_file(self) -> Path:
        return self.sub("run", "ports.json")

    #: Folders of the state bound over the standard places inside the node, so that
    #: every component runs with its defaults.
    def binds(self, bins: dict[str, Path]) -> list[tuple[Path, str, bool]]:
        """``(source, target inside the node, read-only)`` bind mounts."""
        return [
            (self.sub("containerd"), "/var/lib/containerd", False),
            (self.sub("kubelet"), "/var/lib/kubelet", False),
            (self.sub("pod-logs"), "/var/log/pods", False),
            (self.sub("container-logs"), "/var/log/containers", False),
            (self.sub("cni-conf"), "/etc/cni/net.d", False),
            (self.sub("cni-state"), "/var/lib/cni", False),
            (self.sub("local-path"), "/opt/local-path-provisioner", False),
            (bins["runtime"], "/opt/cni/bin", True),
        ]

    # ------------------------------------------------------------------ files

    def write_configs(self, api_host_port: int) -> None:
        """Every component's configuration and kubeconfig (certificates made first)."""
        etc = self.etc
        etc.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        inside = f"https://{NODE_IP}:{API_PORT}"
        for stem, user in (
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("kube-proxy", "system:kube-proxy"),
            ("kube-router", "tasklab:kube-router"),
            ("node", f"system:node:{self.node_name}"),
        ):
            write_kubeconfig(
                etc / f"{stem}.kubeconfig",
                name=self.context,
                server=inside,
                pki=pki,
                client=stem,
                user=user,
            )
        write_kubeconfig(
            self.kubeconfig,
            name=self.context,
            server=f"https://127.0.0.1:{api_host_port}",
            pki=pki,
            client="admin",
            user=f"{self.context}-admin",
        )
        (etc / "resolv.conf").write_text(
            "# The test cluster resolves only its own names: no upstream server.\noptions ndots:1\n"
        )
        (etc / "kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config(), sort_keys=False))
        (etc / "kube-proxy.yaml").write_text(yaml.safe_dump(self._proxy_config(), sort_keys=False))
        (etc / "containerd.toml").write_text(self._containerd_config())
        cni = self.sub("cni-conf")
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-tasklab.conflist").write_text(json.dumps(self._cni_config(), indent=2))

    def _kubelet_config(self) -> dict[str, object]:
        pki = self.pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki.path("kubelet")),
            "tlsPrivateKeyFile": str(pki.path("kubelet", "key")),
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            "cgroupDriver": "cgroupfs",
            # This machine is cgroup v1 (deprecated; required from 1.35 on).
            "failCgroupV1": False,
            "failSwapOn": False,
            # The kernel settings the kubelet wants are shown to it as set (read-only
            # files in the node's mount namespace): it checks and changes nothing.
            "protectKernelDefaults": True,
            "clusterDNS": [DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(self.etc / "resolv.conf"),
            # As kind: a development node never evicts for disk, nor collects images.
            "evictionHard": {
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "serializeImagePulls": False,
            "rotateCertificates": False,
            "staticPodPath": "",
            "maxPods": 110,
        }

    def _proxy_config(self) -> dict[str, object]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.etc / "kube-proxy.kubeconfig")},
            "hostnameOverride": self.node_name,
            "clusterCIDR": CLUSTER_CIDR,
            "bindAddress": NODE_IP,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            # Writing nf_conntrack_max and the conntrack timeouts is refused here.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }

    def _containerd_config(self) -> str:
        # containerd 2.x, configuration version 3; state and root at their defaults
        # (/run is a tmpfs of the node's own, /var/lib/containerd a bind of the state).
        return f"""version = 3

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  # CAP_SYS_RESOURCE is not ours: a lower oom_score_adj than containerd's is refused.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
"""

    def _cni_config(self) -> dict[str, object]:
        return {
            "cniVersion": "1.0.0",
            "name": "tasklab",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    # ------------------------------------------------------------------ commands

    def etcd_argv(self) -> list[str]:
        return [
            "etcd",
            f"--name={self.node_name}",
            f"--data-dir={self.sub('etcd')}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            f"--initial-cluster={self.node_name}=http://127.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--log-level=warn",
        ]

    def apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [
            "kube-apiserver",
            f"--advertise-address={NODE_IP}",
            f"--secure-port={API_PORT}",
            "--etcd-servers=http://127.0.0.1:2379",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--client-ca-file={pki.ca}",
            f"--tls-cert-file={pki.path('apiserver')}",
            f"--tls-private-key-file={pki.path('apiserver', 'key')}",
            f"--kubelet-client-certificate={pki.path('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.path('apiserver-kubelet-client', 'key')}",
            f"--kubelet-certificate-authority={pki.ca}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.path('sa', 'pub')}",
            f"--service-account-signing-key-file={pki.path('sa', 'key')}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--requestheader-client-ca-file={pki.path('front-proxy-ca')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.path('front-proxy-client')}",
            f"--proxy-client-key-file={pki.path('front-proxy-client', 'key')}",
            "--enable-aggregator-routing=true",
            "--profiling=false",
        ]

    def controller_manager_argv(self) -> list[str]:
        pki, kubeconfig = self.pki, self.etc / "controller-manager.kubeconfig"
        return [
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--client-ca-file={pki.ca}",
            f"--cluster-signing-cert-file={pki.ca}",
            f"--cluster-signing-key-file={pki.path('ca', 'key')}",
            f"--root-ca-file={pki.ca}",
            f"--service-account-private-key-file={pki.path('sa', 'key')}",
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={CLUSTER_CIDR}",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def scheduler_argv(self) -> list[str]:
        kubeconfig = self.etc / "scheduler.kubeconfig"
        return [
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def containerd_argv(self) -> list[str]:
        return ["containerd", f"--config={self.etc / 'containerd.toml'}"]

    def kubelet_argv(self) -> list[str]:
        return [
            "kubelet",
            f"--config={self.etc / 'kubelet.yaml'}",
            f"--kubeconfig={self.etc / 'node.kubeconfig'}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ]

    def proxy_argv(self) -> list[str]:
        return ["kube-proxy", f"--config={self.etc / 'kube-proxy.yaml'}"]

    def network_policy_argv(self) -> list[str]:
        """kube-router as a NetworkPolicy engine only (no routing, no Service proxy:
        the bridge CNI and kube-proxy do those), as its firewall DaemonSet runs it."""
        return [
            "kube-router",
            f"--kubeconfig={self.etc / 'kube-router.kubeconfig'}",
            f"--hostname-override={self.node_name}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-ipv6=false",
            "--health-port=20244",
            "--metrics-port=0",
            "--v=1",
        ]


def default_state() -> Path:
    """``$TASKLAB_CLUSTER_DIR``, else ``.dev/cluster`` in the checkout."""
    configured = os.environ.get("TASKLAB_CLUSTER_DIR")
    if configured:
        return Path(configured).absolute()
    from tasklab_devtools.cluster.build import repo_root

    return repo_root() / ".dev" / "cluster"
