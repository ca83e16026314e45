#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 for dapr-rs's end-to-end tests, as plain processes on this machine.
#
#   cluster.sh bins [--from-source] [--prepare-only]  ensure the k8s server binaries (~/.cache/dapr-rs/k8s/bin)
#   cluster.sh deps                           install the Debian packages the cluster needs
#   cluster.sh up [tier1|tier2]               start (or reuse) the cluster; prints the admin kubeconfig path
#   cluster.sh images [BIN_DIR] [NAME...]     build + import dapr-rs/<name>:dev images (default target/release)
#   cluster.sh status                         what runs
#   cluster.sh down                           stop everything and undo every change to the machine
#
# tier1 = etcd + kube-apiserver + kube-controller-manager (API only; pods stay Pending).
# tier2 = tier1 + kube-scheduler + containerd + kubelet + kube-proxy + cluster DNS (pods run).
#
# Network rule: nothing leaves this machine. Pods live on a local bridge; the service CIDR is routed to a
# local dummy interface; a mangle-table chain drops every forwarded packet from the pod CIDR whose
# destination is not a pod, a ClusterIP or the node address (and anything forwarded into pods from
# elsewhere). The cluster DNS (dnsmasq) has no upstream server.
set -euo pipefail

readonly K8S_VERSION=1.20.2
readonly COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
readonly DEFAULT_IMAGES=(daprd dapr-operator dapr-injector dapr-sentry dapr-placement e2e-app)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly REPO
readonly CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/dapr-rs/k8s
readonly BIN=$CACHE/bin
readonly RUN=${DAPR_RS_K8S_DIR:-$CACHE/run}
readonly SEED=$REPO/../shared/cache/k8s-$K8S_VERSION-bins.tar.xz

readonly NODE_NAME=dapr-rs-node0
readonly NODE_IF=dapr-rs-node0     # dummy (or ifb) interface holding the node address
readonly NODE_IP=10.200.0.1
readonly BRIDGE=dapr-rs-cni0
readonly POD_CIDR=10.244.0.0/16
readonly NODE_POD_SUBNET=10.244.0.0/24
readonly POD_GATEWAY=10.244.0.1
readonly SVC_CIDR=10.96.0.0/12
readonly KUBERNETES_SVC_IP=10.96.0.1
readonly CLUSTER_DOMAIN=cluster.local
readonly API_PORT=6443
readonly ETCD_PORT=12379
readonly ETCD_PEER_PORT=12380
readonly CHAIN=DAPR-RS-EGRESS      # mangle table: the egress drop
readonly FWD_CHAIN=DAPR-RS-FORWARD # filter table: let pod<->pod through whatever the FORWARD policy is
readonly CTR_SOCK=$RUN/containerd/containerd.sock
readonly PAUSE_IMAGE=dapr-rs/pause:dev
readonly KUBECONFIG_ADMIN=$RUN/admin.kubeconfig

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

need_root() { [[ $(id -u) == 0 ]] || die "must run as root (it configures network interfaces, iptables and mounts)"; }

# One cluster operation at a time per machine: parallel test binaries call `up` concurrently.
take_lock() {
	mkdir -p "$CACHE"
	exec 9>"$CACHE/lock"
	flock 9
}

# ---------------------------------------------------------------------------------------------- packages

APT_UPDATED=0
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]}"
	if ((APT_UPDATED == 0)); then
		apt-get update -qq >&2
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

cmd_deps() {
	need_root
	# dnsmasq-base: the binary only (the `dnsmasq` package would start a system resolver with upstreams).
	apt_install etcd-server containerd runc containernetworking-plugins iptables conntrack dnsmasq-base \
		openssl busybox-static gcc libc6-dev jq curl iproute2 util-linux xz-utils
	# Any kubectl will do (the machine image has a recent one); Debian's matches the server.
	command -v kubectl >/dev/null || apt_install kubernetes-client
}

# -------------------------------------------------------------------------------------------------- bins

have_bins() {
	local c
	for c in "${COMPONENTS[@]}"; do [[ -x $BIN/$c ]] || return 1; done
}

cmd_bins() {
	local from_source=0 prepare_only=0 a
	for a in "$@"; do
		case $a in
		--from-source) from_source=1 ;;
		--prepare-only) prepare_only=1 ;;
		*) die "bins: unknown option $a" ;;
		esac
	done
	if ((from_source == 0)) && have_bins; then return 0; fi
	mkdir -p "$BIN"
	if ((from_source == 0)) && [[ -f $SEED && -f $SEED.sha256 ]]; then
		log "seeding binaries from $SEED"
		(cd "$(dirname "$SEED")" && sha256sum --quiet -c "$(basename "$SEED").sha256") ||
			die "sha256 mismatch for $SEED"
		tar -xJf "$SEED" -C "$BIN" "${COMPONENTS[@]}"
		echo "$K8S_VERSION seeded from $(basename "$SEED")" >"$BIN/VERSION"
	else
		build_from_source "$prepare_only"
	fi
	((prepare_only)) || have_bins || die "binaries missing in $BIN after bins"
}

# Debian bookworm's `kubernetes` source package (1.20.5+really1.20.2) is the only k8s server source
# in Debian. Built with Debian's Go 1.19 after swapping the vendored reflect2 1.0.1 (segfaults on the
# first custom-resource write under Go >= 1.18) for Debian's 1.0.2. ~10-15 min on 2 cores.
build_from_source() {
	local prepare_only=$1 src=$CACHE/src list=/etc/apt/sources.list.d/dapr-rs-k8s-src.sources
	need_root
	if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		local base
		base=$(find /etc/apt/sources.list.d -name '*.sources' -exec grep -l '^Suites:.*bookworm' {} + | head -1)
		[[ -n $base ]] || die "no bookworm deb822 source list to derive a deb-src entry from"
		log "adding deb-src entries (derived from $base) as $list"
		sed 's/^Types: *deb$/Types: deb-src/' "$base" >"$list"
		APT_UPDATED=0
	fi
	apt-get update -qq >&2
	APT_UPDATED=1
	apt_install golang-go make rsync gcc libc6-dev golang-github-modern-go-reflect2-dev dpkg-dev
	mkdir -p "$src"
	local tree
	tree=$(find "$src" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -1)
	if [[ -z $tree ]]; then
		log "apt-get source kubernetes (bookworm) into $src"
		(cd "$src" && apt-get source -qq kubernetes/bookworm >&2)
		tree=$(find "$src" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -1)
	fi
	[[ -n $tree && -d $tree/vendor/github.com/modern-go/reflect2 ]] || die "no kubernetes 1.20 tree under $src"
	local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
	[[ -d $r2 ]] || die "Debian's reflect2 not found at $r2"
	log "replacing vendored reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
	find "$tree/vendor/github.com/modern-go/reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
	find "$r2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
		-exec cp {} "$tree/vendor/github.com/modern-go/reflect2/" \;
	if ((prepare_only)); then
		log "prepared $tree (go $(go version | awk '{print $3}')); stopping before make (--prepare-only)"
		return 0
	fi
	log "make generated_files (~80 s)"
	if ! (cd "$tree" && make generated_files >&2); then
		# A failed first attempt leaves empty generator binaries behind.
		log "generated_files failed once; retrying from a clean _output"
		rm -rf "$tree/_output"
		(cd "$tree" && make generated_files >&2)
	fi
	local what=() c
	for c in "${COMPONENTS[@]}"; do what+=("cmd/$c"); done
	log "make WHAT=\"${what[*]}\" (10-15 min)"
	(cd "$tree" && make WHAT="${what[*]}" >&2)
	for c in "${COMPONENTS[@]}"; do install -m 0755 "$tree/_output/bin/$c" "$BIN/$c"; done
	echo "$K8S_VERSION built from $(basename "$tree")" >"$BIN/VERSION"
}

# --------------------------------------------------------------------------------------------------- PKI

pki_cert() { # name CN O(or "") SANs(or "") -> $RUN/pki/name.{key,crt}, signed by the CA
	local name=$1 cn=$2 org=$3 sans=$4 d=$RUN/pki subj
	subj="/CN=$cn"
	[[ -z $org ]] || subj="/O=$org$subj"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subj" \
		-keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[[ -z $sans ]] || echo "subjectAltName=$sans"
	} >"$d/$name.ext"
	openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 365 \
		-extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
	rm -f "$d/$name.csr" "$d/$name.ext"
}

make_pki() {
	local d=$RUN/pki
	[[ -f $d/done ]] && return 0
	mkdir -p "$d"
	chmod 700 "$d"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
		-subj "/CN=dapr-rs-e2e-ca" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
	pki_cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
	pki_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
	pki_cert admin admin system:masters ""
	pki_cert controller-manager system:kube-controller-manager "" ""
	pki_cert scheduler system:kube-scheduler "" ""
	pki_cert kube-proxy system:kube-proxy "" ""
	pki_cert node "system:node:$NODE_NAME" system:nodes ""
	pki_cert kubelet-serving "$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME"
	openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
	openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
	touch "$d/done"
}

write_kubeconfig() { # file cert-name
	local d=$RUN/pki
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dapr-rs-e2e
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$d/$2.crt")
    client-key-data: $(base64 -w0 "$d/$2.key")
contexts:
- name: dapr-rs-e2e
  context: {cluster: dapr-rs-e2e, user: $2}
current-context: dapr-rs-e2e
EOF
	chmod 600 "$1"
}

# ----------------------------------------------------------------------------------------------- daemons

pid_of() { [[ -f $RUN/pids/$1.pid ]] && cat "$RUN/pids/$1.pid"; }

# Alive = exists and not a zombie. Daemons are reparented and reaped late, so `kill -0` is not enough.
pid_alive() {
	local pid=$1 stat
	[[ -n $pid && -r /proc/$pid/stat ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != [ZX] ]]
}

# The PID still belongs to the process we started (guards against PID reuse).
pid_is() {
	local pid=$1 expected=$2
	pid_alive "$pid" || return 1
	# No `| grep -q` under pipefail: a writer cut off by grep's early exit would read as "not ours".
	local cmdline
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"$expected"* ]]
}

running() { # name
	local pid
	pid=$(pid_of "$1") || return 1
	pid_is "$pid" "$(cat "$RUN/pids/$1.cmd" 2>/dev/null)"
}

# start NAME CMD...: detached (own session, no inherited fds: fd 9 is the lock), PID written by the child.
start() {
	local name=$1
	shift
	mkdir -p "$RUN/pids" "$RUN/logs"
	printf '%s' "$*" >"$RUN/pids/$name.cmd"
	rm -f "$RUN/pids/$name.pid"
	# shellcheck disable=SC2016 # $$ and "$@" expand in the child shell
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/pids/$name.pid" "$@" \
		</dev/null >>"$RUN/logs/$name.log" 2>&1 9>&- &
	local i
	for i in $(seq 50); do
		[[ -s $RUN/pids/$name.pid ]] && return 0
		sleep 0.05
	done
	die "$name did not start"
}

stop() { # name [grace seconds]
	local name=$1 grace=${2:-15} pid i
	pid=$(pid_of "$name") || return 0
	if pid_is "$pid" "$(cat "$RUN/pids/$name.cmd" 2>/dev/null)"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			pid_alive "$pid" || break
			sleep 0.1
		done
		if pid_alive "$pid"; then
			log "$name ($pid) ignored SIGTERM; killing"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				pid_alive "$pid" || break
				sleep 0.1
			done
		fi
	fi
	rm -f "$RUN/pids/$name.pid"
}

wait_for() { # what timeout-seconds command...
	local desc=$1 timeout=$2 start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= timeout)); then
			log "timed out after ${timeout}s waiting for $desc"
			return 1
		fi
		sleep 0.3
	done
}

admin_curl() {
	curl -fsS --max-time 3 --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
		"https://$NODE_IP:$API_PORT$1"
}
kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" --cache-dir "$RUN/kubectl-cache" "$@"; }

# ---------------------------------------------------------------------------------------- host paths

# Fixed paths the Kubernetes processes create whatever their flags say; removed by `down` only when
# they did not exist before the cluster first started.
readonly HOST_PATHS=(/var/log/pods /var/log/containers /run/containerd /var/lib/cni /run/netns
	/var/lib/kubelet /usr/libexec/kubernetes)

note_host_paths() {
	local f=$RUN/host-paths.absent p
	[[ -f $f ]] && return 0
	for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] || echo "$p"; done >"$f"
}

remove_host_paths() {
	local p
	[[ -f $RUN/host-paths.absent ]] || return 0
	while read -r p; do
		[[ -n $p && -e $p ]] || continue
		unmount_under "$p"
		if [[ $p == /run/netns ]]; then
			rmdir "$p" 2>/dev/null || true # other namespaces may have appeared meanwhile
		else
			rm -rf "$p"
		fi
	done <"$RUN/host-paths.absent"
}

# ----------------------------------------------------------------------------------------------- network

save_sysctl() { # key -> remembered once, restored by down
	local f=$RUN/net/sysctl.saved
	grep -q "^$1=" "$f" 2>/dev/null || echo "$1=$(sysctl -n "$1")" >>"$f"
}

net_up() {
	mkdir -p "$RUN/net"
	if ! ip link show "$NODE_IF" >/dev/null 2>&1; then
		# A dummy interface where the kernel has them; otherwise an ifb device, which behaves the
		# same for routing (holds a local address, silently drops what is routed to it).
		# A bridge with no ports is the last resort: it, too, delivers nothing anywhere.
		ip link add "$NODE_IF" type dummy 2>/dev/null || ip link add "$NODE_IF" type ifb 2>/dev/null ||
			ip link add "$NODE_IF" type bridge ||
			die "cannot create the $NODE_IF interface (dummy, ifb or bridge)"
		sysctl -qw "net.ipv6.conf.$NODE_IF.disable_ipv6=1" 2>/dev/null || true
	fi
	ip addr replace "$NODE_IP/32" dev "$NODE_IF"
	ip link set "$NODE_IF" up
	# ClusterIPs never go towards a gateway, even when kube-proxy isn't running.
	ip route replace "$SVC_CIDR" dev "$NODE_IF"
	egress_rules
}

# Idempotent: rebuilds the chains and puts the jumps first.
egress_rules() {
	iptables -t mangle -N "$CHAIN" 2>/dev/null || iptables -t mangle -F "$CHAIN"
	iptables -t mangle -A "$CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
	iptables -t mangle -A "$CHAIN" -s "$POD_CIDR" -d "$SVC_CIDR" -j RETURN
	iptables -t mangle -A "$CHAIN" -s "$POD_CIDR" -d "$NODE_IP/32" -j RETURN
	iptables -t mangle -A "$CHAIN" -s "$POD_CIDR" -m comment --comment "dapr-rs: pods reach nothing off this machine" -j DROP
	iptables -t mangle -A "$CHAIN" -d "$POD_CIDR" -m comment --comment "dapr-rs: nothing from elsewhere reaches pods" -j DROP
	local hook
	for hook in "FORWARD -j $CHAIN" "OUTPUT -s $POD_CIDR -j $CHAIN"; do
		# shellcheck disable=SC2086 # hook is a rule spec
		while iptables -t mangle -D $hook 2>/dev/null; do :; done
		# shellcheck disable=SC2086
		iptables -t mangle -I $hook
	done
	iptables -t filter -N "$FWD_CHAIN" 2>/dev/null || iptables -t filter -F "$FWD_CHAIN"
	iptables -t filter -A "$FWD_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j ACCEPT
	while iptables -t filter -D FORWARD -j "$FWD_CHAIN" 2>/dev/null; do :; done
	iptables -t filter -A FORWARD -j "$FWD_CHAIN"
}

# ipt_purge REGEX: removes every rule jumping to, and every chain named, REGEX (v4 and v6).
# After our cluster ran: KUBE- (kubelet, kube-proxy) and DAPR-RS-; otherwise only DAPR-RS-.
ipt_purge() {
	local re=$1 ipt save t rule chains c
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null || continue
		save=${ipt}-save
		for t in raw mangle nat filter; do
			$save -t "$t" >/dev/null 2>&1 || continue
			while read -r rule; do
				[[ -n $rule ]] || continue
				eval "$ipt -t $t -D ${rule#-A }" 2>/dev/null || true
			done < <($save -t "$t" | grep -E "^-A [A-Z]+ .*-j ($re)" | grep -vE "^-A ($re)" || true)
			chains=$($save -t "$t" | sed -nE "s/^:(($re)[^ ]*) .*/\1/p")
			for c in $chains; do $ipt -t "$t" -F "$c" 2>/dev/null || true; done
			for c in $chains; do $ipt -t "$t" -X "$c" 2>/dev/null || true; done
		done
	done
}

# ---------------------------------------------------------------------------------------------- tier 1

start_tier1() {
	local p=$RUN/pki
	mkdir -p "$RUN/etcd"
	chmod 700 "$RUN/etcd"
	if ! running etcd; then
		start etcd /usr/bin/etcd --name default --data-dir "$RUN/etcd" \
			--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
			--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
			--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
			--initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
	fi
	wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" || die "etcd not healthy (log: $RUN/logs/etcd.log)"
	if ! running kube-apiserver; then
		start kube-apiserver "$BIN/kube-apiserver" \
			--advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" --insecure-port=0 \
			--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
			--client-ca-file="$p/ca.crt" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
			--kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
			--kubelet-client-key="$p/apiserver-kubelet-client.key" \
			--kubelet-certificate-authority="$p/ca.crt" --kubelet-preferred-address-types=InternalIP \
			--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
			--service-account-signing-key-file="$p/sa.key" --service-account-key-file="$p/sa.pub" \
			--api-audiences="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
			--service-cluster-ip-range="$SVC_CIDR" --authorization-mode=Node,RBAC \
			--enable-admission-plugins=NodeRestriction --allow-privileged=true --profiling=false --v=1
	fi
	wait_for "kube-apiserver /readyz" 60 admin_curl /readyz || die "kube-apiserver not ready (log: $RUN/logs/kube-apiserver.log)"
	if ! running kube-controller-manager; then
		start kube-controller-manager "$BIN/kube-controller-manager" \
			--kubeconfig="$RUN/controller-manager.kubeconfig" \
			--authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
			--authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
			--bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials \
			--service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
			--cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
			--allocate-node-cidrs --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SVC_CIDR" \
			--flex-volume-plugin-dir="$RUN/kubelet/volume-plugins" \
			--profiling=false --v=1
	fi
	wait_for kube-controller-manager 60 curl -fsSk --max-time 2 https://127.0.0.1:10257/healthz ||
		die "kube-controller-manager not healthy (log: $RUN/logs/kube-controller-manager.log)"
	# Pods (and tests) need the default ServiceAccount, which the controller-manager creates.
	wait_for "the default ServiceAccount" 60 kc get serviceaccount default -n default ||
		die "no default ServiceAccount (log: $RUN/logs/kube-controller-manager.log)"
}

tier1_healthy() {
	running etcd && running kube-apiserver && running kube-controller-manager && admin_curl /readyz >/dev/null
}

# ---------------------------------------------------------------------------------------------- tier 2

write_tier2_config() {
	local p=$RUN/pki
	mkdir -p "$RUN/containerd" "$RUN/cni/net.d" "$RUN/cni/networks" "$RUN/kubelet" "$RUN/dns"
	cat >"$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # root lacks CAP_SYS_RESOURCE here: runc can't lower oom_score_adj below the parent's.
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$RUN/containerd/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$RUN/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "$RUN/containerd/opt"
EOF
	# ipMasq off: nothing is meant to leave the node, so there is nothing to masquerade.
	cat >"$RUN/cni/net.d/10-dapr-rs.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "dapr-rs",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$RUN/cni/networks"
      }
    }
  ]
}
EOF
	# Pods inherit no host nameserver or search domain: only the cluster DNS.
	echo "# dapr-rs e2e: no upstream resolvers" >"$RUN/kubelet/resolv.conf"
	cat >"$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$p/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$p/kubelet-serving.crt"
tlsPrivateKeyFile: "$p/kubelet-serving.key"
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$NODE_IP]
resolvConf: "$RUN/kubelet/resolv.conf"
cgroupDriver: cgroupfs
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%", nodefs.inodesFree: "2%"}
EOF
	write_kubeconfig "$RUN/node.kubeconfig" node
	write_kubeconfig "$RUN/scheduler.kubeconfig" scheduler
	write_kubeconfig "$RUN/kube-proxy.kubeconfig" kube-proxy
}

build_pause() {
	local d=$RUN/images/pause
	mkdir -p "$d"
	cat >"$d/pause.c" <<'EOF'
/* The pod sandbox's process: reap children, exit on SIGINT/SIGTERM, otherwise sleep forever. */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
}
EOF
	# Kubernetes' own pause.c when a source tree was fetched by `bins --from-source`; else the equivalent above.
	local upstream
	upstream=$(find "$CACHE/src" -maxdepth 5 -path '*/build/pause/linux/pause.c' 2>/dev/null | head -1 || true)
	[[ -z $upstream ]] || cp "$upstream" "$d/pause.c"
	gcc -static -O2 -o "$d/pause" "$d/pause.c"
	import_image pause "$d/pause"
}

start_tier2() {
	write_tier2_config
	save_sysctl net.ipv4.ip_forward
	save_sysctl net.ipv4.conf.all.route_localnet # kube-proxy sets it
	save_sysctl net.bridge.bridge-nf-call-iptables
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

	if ! running kube-scheduler; then
		start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$RUN/scheduler.kubeconfig" \
			--authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
			--authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
			--bind-address=127.0.0.1 --port=0 --leader-elect=false --profiling=false --v=1
	fi
	start_dns
	if ! running containerd; then
		start containerd /usr/bin/containerd --config "$RUN/containerd/config.toml"
	fi
	wait_for containerd 30 ctr --address "$CTR_SOCK" version || die "containerd not up (log: $RUN/logs/containerd.log)"
	if ! has_image "$PAUSE_IMAGE"; then
		build_pause
	fi
	if ! running kubelet; then
		start kubelet "$BIN/kubelet" --config="$RUN/kubelet/config.yaml" --kubeconfig="$RUN/node.kubeconfig" \
			--container-runtime=remote --container-runtime-endpoint="unix://$CTR_SOCK" \
			--image-service-endpoint="unix://$CTR_SOCK" --root-dir="$RUN/kubelet/root" \
			--volume-plugin-dir="$RUN/kubelet/volume-plugins" --cert-dir="$RUN/kubelet/pki" \
			--hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --oom-score-adj=0 \
			--pod-infra-container-image="$PAUSE_IMAGE" --v=1
	fi
	if ! running kube-proxy; then
		start kube-proxy "$BIN/kube-proxy" --kubeconfig="$RUN/kube-proxy.kubeconfig" --proxy-mode=iptables \
			--cluster-cidr="$POD_CIDR" --hostname-override="$NODE_NAME" --bind-address="$NODE_IP" \
			--healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
			--nodeport-addresses="$NODE_IP/32" --conntrack-max-per-core=0 --masquerade-all --v=1
	fi
	wait_for kube-scheduler 60 curl -fsSk --max-time 2 https://127.0.0.1:10259/healthz ||
		die "kube-scheduler not healthy (log: $RUN/logs/kube-scheduler.log)"
	wait_for kubelet 60 curl -fsS --max-time 2 http://127.0.0.1:10248/healthz || die "kubelet not healthy (log: $RUN/logs/kubelet.log)"
	wait_for kube-proxy 60 curl -fsS --max-time 2 http://127.0.0.1:10256/healthz ||
		die "kube-proxy not healthy (log: $RUN/logs/kube-proxy.log)"
	wait_for "node $NODE_NAME Ready" 90 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s ||
		die "node not Ready (log: $RUN/logs/kubelet.log)"
	# kube-proxy prepends its own FORWARD jumps; ours must stay first.
	egress_rules
}

tier2_healthy() {
	tier1_healthy && running kube-scheduler && running containerd && running kubelet && running kube-proxy &&
		running dnsmasq && running dns-watch && curl -fsS --max-time 2 http://127.0.0.1:10248/healthz >/dev/null
}

# ------------------------------------------------------------------------------------------------- DNS

start_dns() {
	local d=$RUN/dns
	mkdir -p "$d"
	[[ -f $d/hosts ]] || : >"$d/hosts"
	cat >"$d/dnsmasq.conf" <<EOF
# dapr-rs e2e cluster DNS: answers only from $d/hosts, never forwards anywhere.
no-resolv
no-hosts
no-poll
bind-interfaces
listen-address=$NODE_IP
port=53
addn-hosts=$d/hosts
local=/$CLUSTER_DOMAIN/
local=/10.in-addr.arpa/
domain-needed
bogus-priv
user=root
keep-in-foreground
log-facility=-
EOF
	if ! running dnsmasq; then
		start dnsmasq /usr/sbin/dnsmasq --conf-file="$d/dnsmasq.conf"
	fi
	if ! running dns-watch; then
		start dns-watch bash "$REPO/e2e/k8s/cluster.sh" dns-watch
	fi
}

# The hosts file for dnsmasq, from the API's service, endpoints and pod lists (in that order):
# ClusterIP services, headless services (one line per ready endpoint, plus <hostname>.<svc> for
# StatefulSet pods) and <a-b-c-d>.<ns>.pod names of running pods.
# shellcheck disable=SC2016 # a jq program, not shell
readonly HOSTS_JQ='
  .[0].items as $svcs | .[1].items as $eps | .[2].items as $pods |
  ($svcs[] | select(.spec.clusterIP != null and .spec.clusterIP != "None" and .spec.clusterIP != "")
     | "\(.spec.clusterIP) \(.metadata.name).\(.metadata.namespace).svc.\($d)"),
  ( [$svcs[] | select(.spec.clusterIP == "None") | "\(.metadata.namespace)/\(.metadata.name)"] as $headless
    | $eps[] | select(("\(.metadata.namespace)/\(.metadata.name)") as $k | $headless | index($k))
    | .metadata as $m | (.subsets // [])[] | (.addresses // [])[]
    | "\(.ip) \($m.name).\($m.namespace).svc.\($d)",
      (select(.hostname != null) | "\(.ip) \(.hostname).\($m.name).\($m.namespace).svc.\($d)")),
  ($pods[] | select(.status.phase == "Running" and .status.podIP != null)
     | "\(.status.podIP) \(.status.podIP | gsub("\\."; "-")).\(.metadata.namespace).pod.\($d)")'

# One curl for the three lists: far cheaper every second than a kubectl process.
cmd_dns_watch() {
	local d=$RUN/dns new pid api=https://$NODE_IP:$API_PORT/api/v1 p=$RUN/pki
	new=$d/hosts.new
	while true; do
		if curl -fsS --max-time 5 --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
			"$api/services" "$api/endpoints" "$api/pods" 2>>"$RUN/logs/dns-watch.err" |
			jq -rs --arg d "$CLUSTER_DOMAIN" "$HOSTS_JQ" 2>>"$RUN/logs/dns-watch.err" | sort -u >"$new" &&
			! cmp -s "$new" "$d/hosts"; then
			mv "$new" "$d/hosts"
			if pid=$(pid_of dnsmasq); then kill -HUP "$pid" 2>/dev/null || true; fi
		fi
		sleep 1
	done
}

# ---------------------------------------------------------------------------------------------- images

# has_image REF: containerd (k8s.io namespace) has it. Listed first: `ctr | grep -q` under pipefail
# fails whenever grep stops reading early.
has_image() {
	local list
	list=$(ctr --address "$CTR_SOCK" -n k8s.io images ls -q) || return 1
	grep -qxF "docker.io/$1" <<<"$list"
}

# import_image NAME BINARY: a docker-save tarball (manifest.json, config, one layer) with the binary at
# /NAME plus its shared libraries and loader at their own paths; no base image. The image runs as
# 65532:65532 like Dapr's distroless "nonroot" images, so `runAsNonRoot: true` (the injected daprd's
# default) is satisfied without a runAsUser.
import_image() {
	local name=$1 bin=$2 d root layer_sum cfg_sum lib
	d=$(mktemp -d "$RUN/images/build.XXXXXX")
	root=$d/rootfs
	mkdir -p "$root/tmp" "$root/etc"
	chmod 1777 "$root/tmp"
	cp "$bin" "$root/$name"
	if ldd "$bin" >/dev/null 2>&1; then
		while read -r lib; do
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done < <(ldd "$bin" | grep -oE '(^|[[:space:]])/[^ ]+' | tr -d '[:blank:]' | sort -u)
	fi
	tar --numeric-owner --owner=0 --group=0 --sort=name -C "$root" -cf "$d/layer.tar" .
	layer_sum=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	# daprd's image has no entrypoint, as Dapr's: the injector's args start with "/daprd" (Dapr's
	# sidecar shape). Every other image has its binary as the entrypoint (the chart passes flags only).
	local start='"Entrypoint":["/'$name'"]'
	[[ $name == daprd ]] && start='"Cmd":["/daprd"]'
	cat >"$d/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{$start,"Env":["PATH=/"],"WorkingDir":"/","User":"65532:65532"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sum"]},"history":[{"created_by":"dapr-rs e2e/k8s/cluster.sh images"}]}
EOF
	cfg_sum=$(sha256sum "$d/config.json" | cut -d' ' -f1)
	mv "$d/config.json" "$d/$cfg_sum.json"
	printf '[{"Config":"%s.json","RepoTags":["dapr-rs/%s:dev"],"Layers":["layer.tar"]}]\n' "$cfg_sum" "$name" >"$d/manifest.json"
	tar -C "$d" -cf "$d/image.tar" manifest.json "$cfg_sum.json" layer.tar
	ctr --address "$CTR_SOCK" -n k8s.io images import "$d/image.tar" >/dev/null
	rm -rf "$d"
	log "imported dapr-rs/$name:dev ($(du -h "$bin" | cut -f1) binary)"
}

cmd_images() {
	local dir=${1:-$REPO/target/release} names name bin sum marker explicit=0 t0=$SECONDS
	[[ $# -eq 0 ]] || shift
	[[ -d $dir ]] || die "images: no directory $dir (build first: cargo build --bins [--release])"
	if (($#)); then
		names=("$@")
		explicit=1
	else
		names=("${DEFAULT_IMAGES[@]}")
	fi
	need_root
	take_lock
	tier2_healthy || die "images: the tier2 cluster is not running (cluster.sh up tier2)"
	mkdir -p "$RUN/images"
	for name in "${names[@]}"; do
		bin=$dir/$name
		if [[ ! -x $bin ]]; then
			((explicit)) && die "images: $bin does not exist"
			log "images: skipping $name (no $bin)"
			continue
		fi
		# The suffix changes whenever the image layout does, so older imports are redone.
		sum="$(sha256sum "$bin" | cut -d' ' -f1) nonroot,daprd-cmd"
		marker=$RUN/images/$name.sha256
		if [[ -f $marker && $(cat "$marker") == "$sum" ]] && has_image "dapr-rs/$name:dev"; then
			continue
		fi
		import_image "$name" "$bin"
		echo "$sum" >"$marker"
	done
	log "images ready in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------------------------------------ up

tier_running() {
	if tier2_healthy 2>/dev/null; then
		echo 2
	elif tier1_healthy 2>/dev/null; then echo 1; else echo 0; fi
}

cmd_up() {
	local want=${1:-tier2} t0=$SECONDS have
	case $want in tier1) want=1 ;; tier2) want=2 ;; *) die "up: tier1 or tier2, not $want" ;; esac
	need_root
	take_lock
	have=$(tier_running)
	if ((have >= want)); then
		log "reusing the running tier$have cluster"
		echo "$KUBECONFIG_ADMIN"
		return 0
	fi
	if ((have == 0)) && [[ -d $RUN ]]; then
		log "a previous cluster is stopped or broken; cleaning it up first"
		do_down
	fi
	cmd_deps
	cmd_bins
	mkdir -p "$RUN"
	note_host_paths
	make_pki
	write_kubeconfig "$KUBECONFIG_ADMIN" admin
	write_kubeconfig "$RUN/controller-manager.kubeconfig" controller-manager
	net_up
	((have >= 1)) || start_tier1
	log "tier1 ready ($((SECONDS - t0)) s)"
	if ((want == 2)); then
		start_tier2
		log "tier2 ready ($((SECONDS - t0)) s)"
	fi
	echo "$want" >"$RUN/tier"
	echo "$KUBECONFIG_ADMIN"
}

# ---------------------------------------------------------------------------------------------- down

# Kills every process in the kubelet's pod cgroups, then removes those cgroups (cgroup v1 and v2).
kill_pod_cgroups() {
	local procs i
	for i in 1 2 3; do
		procs=$(find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
		[[ -n $procs ]] || break
		# shellcheck disable=SC2086 # one PID per word
		kill -KILL $procs 2>/dev/null || true
		sleep 0.5
	done
	find /sys/fs/cgroup -depth -type d -path '*kubepods*' -exec rmdir {} \; 2>/dev/null || true
}

# containerd-shim-runc-v2 processes started by our containerd (their -address is our socket).
kill_our_shims() {
	local p cmdline
	for p in /proc/[0-9]*; do
		cmdline=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		[[ $cmdline == *"-address $CTR_SOCK "* ]] || continue
		kill -KILL "${p#/proc/}" 2>/dev/null || true
	done
}

# Network namespaces made by our CNI config (an address in our pod subnet), and the bridge.
remove_pod_netns() {
	local ns addrs
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		addrs=$(ip netns exec "$ns" ip -4 -o addr 2>/dev/null) || continue
		if [[ $addrs == *" ${POD_GATEWAY%.*}."* ]]; then
			ip netns delete "$ns" 2>/dev/null || true
		fi
	done
	ip link delete "$BRIDGE" 2>/dev/null || true
	rm -rf /var/lib/cni/results/dapr-rs-* /var/lib/cni/networks/dapr-rs 2>/dev/null || true
}

unmount_under() { # dir: every mount below it, deepest first
	local m
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done < <(awk -v p="$1/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
}

do_down() {
	local t0=$SECONDS kv
	if [[ ! -d $RUN ]]; then
		# No cluster of ours ran: leave any other Kubernetes' KUBE-* rules alone.
		ip link delete "$NODE_IF" 2>/dev/null || true
		ipt_purge 'DAPR-RS-'
		return 0
	fi
	stop dns-watch 5
	stop dnsmasq 5
	stop kube-proxy 10
	stop kubelet 15
	kill_pod_cgroups
	stop containerd 15
	kill_our_shims
	stop kube-scheduler 10
	stop kube-controller-manager 10
	stop kube-apiserver 20
	stop etcd 15
	if [[ -x $BIN/kube-proxy ]]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
	remove_pod_netns
	ipt_purge 'KUBE-|DAPR-RS-'
	ip route delete "$SVC_CIDR" dev "$NODE_IF" 2>/dev/null || true
	ip link delete "$NODE_IF" 2>/dev/null || true
	if [[ -f $RUN/net/sysctl.saved ]]; then
		while read -r kv; do sysctl -qw "$kv" || true; done <"$RUN/net/sysctl.saved"
	fi
	unmount_under "$RUN"
	remove_host_paths
	rm -rf "$RUN"
	log "down in $((SECONDS - t0)) s"
}

cmd_down() {
	need_root
	take_lock
	do_down
}

cmd_status() {
	local n pid
	for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy dnsmasq dns-watch; do
		if running "$n" 2>/dev/null; then
			pid=$(pid_of "$n")
			printf '%-24s running  pid %-7s rss %s kB\n' "$n" "$pid" "$(awk '/VmRSS/{print $2}' "/proc/$pid/status")"
		else
			printf '%-24s stopped\n' "$n"
		fi
	done
	echo "tier running: $(tier_running)"
	[[ ! -f $KUBECONFIG_ADMIN ]] || echo "kubeconfig: $KUBECONFIG_ADMIN"
}

main() {
	local cmd=${1:-}
	[[ $# -eq 0 ]] || shift
	case $cmd in
	bins)
		need_root
		take_lock
		cmd_deps
		cmd_bins "$@"
		;;
	deps) cmd_deps ;;
	up) cmd_up "$@" ;;
	images) cmd_images "$@" ;;
	down) cmd_down ;;
	status) cmd_status ;;
	dns-watch) cmd_dns_watch ;;
	*)
		sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
		exit 64
		;;
	esac
}

main "$@"
