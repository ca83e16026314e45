{{/*
Shared pieces of the control-plane templates. Helpers that need the chart
root and a component take a dict: (dict "root" $ "c" <component values> ...).
*/}}

{{/* global.k8sLabels, each value rendered as a template. Input: root. */}}
{{- define "dapr.labels" -}}
{{- $out := dict -}}
{{- range $key, $value := .Values.global.k8sLabels -}}
{{- $_ := set $out $key (tpl (toString $value) $) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Image reference. Dapr-rs ships one image per binary, named after it
(dapr-operator, dapr-sentry, ...); an image name containing "/" is taken as a
full reference, as in Dapr. Input: dict root, name.
*/}}
{{- define "dapr.image" -}}
{{- if contains "/" .name -}}
{{- .name -}}
{{- else -}}
{{- printf "%s/%s:%s" .root.Values.global.registry .name (toString .root.Values.global.tag) -}}
{{- end -}}
{{- end -}}

{{/* host:port of Sentry. Input: root. */}}
{{- define "dapr.sentryAddress" -}}
{{- if .Values.global.mtls.sentryAddress -}}
{{- .Values.global.mtls.sentryAddress -}}
{{- else -}}
{{- printf "dapr-sentry.%s.svc%s:443" .Release.Namespace .Values.global.dnsSuffix -}}
{{- end -}}
{{- end -}}

{{/* Sentry's SPIFFE id, the audience of the projected identity token. Input: root. */}}
{{- define "dapr.sentryAudience" -}}
{{- printf "spiffe://%s/ns/%s/dapr-sentry" .Values.global.mtls.controlPlaneTrustDomain .Release.Namespace -}}
{{- end -}}

{{/*
PodDisruptionBudget API: policy/v1 when the cluster serves it (1.21+), else
policy/v1beta1 (1.20, the test cluster). A live cluster's discovery lists
"policy/v1/PodDisruptionBudget" only when it is served; `helm template`'s
built-in version set always contains "policy/v1", so there the kube version
decides as well. Input: root.
*/}}
{{- define "dapr.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget" -}}
policy/v1
{{- else if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21.0-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* A PodDisruptionBudget for HA mode. Input: dict root, name, app. */}}
{{- define "dapr.pdb" -}}
{{- $root := .root -}}
apiVersion: {{ include "dapr.pdbApiVersion" $root }}
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    app: {{ .app }}
    {{- include "dapr.labels" $root | trim | nindent 4 }}
spec:
  {{- with $root.Values.global.ha.disruption.minimumAvailable }}
  minAvailable: {{ . }}
  {{- end }}
  {{- with $root.Values.global.ha.disruption.maximumUnavailable }}
  maxUnavailable: {{ . }}
  {{- end }}
  selector:
    matchLabels:
      app: {{ .app }}
{{- end -}}

{{/*
Pod security context. Dapr's images run as the distroless `nonroot` user;
the uid is set explicitly so runAsNonRoot holds whatever USER the image
declares. Input: dict root, c.
*/}}
{{- define "dapr.podSecurityContext" -}}
{{- if .c.runAsNonRoot }}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
{{- end }}
{{- with .c.fsGroup }}
fsGroup: {{ . }}
{{- end }}
{{- with .root.Values.global.seccompProfile }}
seccompProfile:
  type: {{ . }}
{{- end }}
{{- end -}}

{{/* Container security context: no privilege, no capabilities, read-only root. Input: dict root, c. */}}
{{- define "dapr.containerSecurityContext" -}}
{{- if .c.runAsNonRoot }}
runAsNonRoot: true
{{- end }}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- with .root.Values.global.seccompProfile }}
seccompProfile:
  type: {{ . }}
{{- end }}
{{- end -}}

{{/* Liveness and readiness on GET /healthz. Input: dict c, port. */}}
{{- define "dapr.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  initialDelaySeconds: {{ .c.livenessProbe.initialDelaySeconds }}
  periodSeconds: {{ .c.livenessProbe.periodSeconds }}
  failureThreshold: {{ .c.livenessProbe.failureThreshold }}
readinessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  initialDelaySeconds: {{ .c.readinessProbe.initialDelaySeconds }}
  periodSeconds: {{ .c.readinessProbe.periodSeconds }}
  failureThreshold: {{ .c.readinessProbe.failureThreshold }}
{{- end -}}

{{/* Logging and metrics flags shared by every control-plane binary. Input: dict root, c. */}}
{{- define "dapr.commonArgs" -}}
- "--log-level"
- {{ .c.logLevel | quote }}
{{- if .root.Values.global.logAsJson }}
- "--log-as-json"
{{- end }}
{{- if .root.Values.global.prometheus.enabled }}
- "--enable-metrics=true"
- "--metrics-port"
- {{ .root.Values.global.prometheus.port | toString | quote }}
{{- else }}
- "--enable-metrics=false"
{{- end }}
{{- end -}}

{{/* Container ports for metrics (when enabled). Input: root. */}}
{{- define "dapr.metricsContainerPort" -}}
{{- if .Values.global.prometheus.enabled }}
- name: metrics
  containerPort: {{ .Values.global.prometheus.port }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* Service port for metrics (when enabled). Input: root. */}}
{{- define "dapr.metricsServicePort" -}}
{{- if .Values.global.prometheus.enabled }}
- name: metrics
  port: {{ .Values.global.prometheus.port }}
  targetPort: {{ .Values.global.prometheus.port }}
  protocol: TCP
  appProtocol: http
{{- end }}
{{- end -}}

{{/* Prometheus scrape annotations (when enabled). Input: root. */}}
{{- define "dapr.prometheusAnnotations" -}}
{{- if .Values.global.prometheus.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.global.prometheus.port | toString | quote }}
prometheus.io/path: "/"
{{- end }}
{{- end -}}

{{/* Extra env vars from a map. Input: c. */}}
{{- define "dapr.extraEnv" -}}
{{- range $name, $value := .extraEnvVars }}
- name: {{ $name | quote }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
The trust-anchor ConfigMap and Sentry token volumes. Naming the key makes
the kubelet hold the container until Sentry has published the root, instead
of starting it without trust anchors. Input: root.
*/}}
{{- define "dapr.trustVolumes" -}}
- name: dapr-trust-bundle
  configMap:
    name: dapr-trust-bundle
    items:
      - key: {{ (.Values.global.issuerFilenames | default dict).ca | default "ca.crt" | base }}
        path: ca.crt
{{- if .Values.global.mtls.mountSentryVolume }}
- name: dapr-identity-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 600
          audience: {{ include "dapr.sentryAudience" . | quote }}
{{- end }}
{{- end -}}

{{- define "dapr.trustVolumeMounts" -}}
- name: dapr-trust-bundle
  mountPath: /var/run/secrets/dapr.io/tls
  readOnly: true
{{- if .Values.global.mtls.mountSentryVolume }}
- name: dapr-identity-token
  mountPath: /var/run/secrets/dapr.io/sentrytoken
  readOnly: true
{{- end }}
{{- end -}}

{{/* Environment telling a control-plane service how to reach Sentry. Input: root. */}}
{{- define "dapr.trustEnv" -}}
- name: DAPR_TRUST_ANCHORS_FILE
  value: /var/run/secrets/dapr.io/tls/ca.crt
- name: DAPR_CONTROL_PLANE_TRUST_DOMAIN
  value: {{ .Values.global.mtls.controlPlaneTrustDomain | quote }}
- name: DAPR_SENTRY_ADDRESS
  value: {{ include "dapr.sentryAddress" . | quote }}
{{- end -}}

{{/*
Node placement: OS (and arch) affinity, anti-affinity between replicas in HA
mode, pull secrets, node selector, tolerations, priority class.
Input: dict root, app, ha (bool).
*/}}
{{- define "dapr.podPlacement" -}}
{{- $g := .root.Values.global -}}
{{- $policy := $g.ha.podAntiAffinityPolicy -}}
{{- if not (has $policy (list "preferredDuringSchedulingIgnoredDuringExecution" "requiredDuringSchedulingIgnoredDuringExecution")) -}}
{{- fail "global.ha.podAntiAffinityPolicy must be preferredDuringSchedulingIgnoredDuringExecution or requiredDuringSchedulingIgnoredDuringExecution" -}}
{{- end }}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/os
              operator: In
              values: [{{ $g.daprControlPlaneOs | quote }}]
            {{- with $g.daprControlPlaneArch }}
            - key: kubernetes.io/arch
              operator: In
              values: [{{ . | quote }}]
            {{- end }}
  {{- if .ha }}
  podAntiAffinity:
    {{- if eq $policy "requiredDuringSchedulingIgnoredDuringExecution" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchLabels:
            app: {{ .app }}
        topologyKey: {{ $g.ha.topologyKey }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          labelSelector:
            matchLabels:
              app: {{ .app }}
          topologyKey: {{ $g.ha.topologyKey }}
    {{- end }}
  {{- end }}
{{- with $g.imagePullSecrets }}
imagePullSecrets:
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
{{- range . }}
{{- if kindIs "map" . }}
  - name: {{ .name }}
{{- else }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- with $g.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Replicas of a Deployment: global.ha.replicaCount in HA mode. Input: dict root, c. */}}
{{- define "dapr.replicas" -}}
{{- if .root.Values.global.ha.enabled -}}
{{- .root.Values.global.ha.replicaCount -}}
{{- else -}}
{{- .c.replicaCount -}}
{{- end -}}
{{- end -}}

{{/* Raft peers of the placement StatefulSet: id=<pod>.<headless svc>.<ns>.svc<suffix>:<raft port>. Input: root. */}}
{{- define "dapr.placement.initialCluster" -}}
{{- $peers := list -}}
{{- range $i := until 3 -}}
{{- $id := printf "dapr-placement-server-%d" $i -}}
{{- $peers = append $peers (printf "%s=%s.dapr-placement-server.%s.svc%s:%v" $id $id $.Release.Namespace $.Values.global.dnsSuffix $.Values.dapr_placement.ports.raftRPCPort) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}
