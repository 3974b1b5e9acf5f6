{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "parley.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "parley.nodeLabels" -}}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "parley.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret the nodes load into their environment: the user's or the chart's. */}}
{{- define "parley.secretName" -}}
{{- default (include "parley.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "parley.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret .Values.redis.bundled.enabled -}}true{{- end -}}
{{- end -}}

{{- define "parley.redisName" -}}
{{- printf "%s-redis" (include "parley.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pods that may exist at once: per-pod media Services are rendered for each. */}}
{{- define "parley.maxPods" -}}
{{- if .Values.autoscaling.enabled -}}{{ .Values.autoscaling.maxReplicas }}{{- else -}}{{ .Values.replicaCount }}{{- end -}}
{{- end -}}

{{- define "parley.perPodMedia" -}}
{{- if has .Values.media.mode (list "nodePort" "loadBalancer") -}}true{{- end -}}
{{- end -}}

{{- define "parley.hostBound" -}}
{{- if has .Values.media.mode (list "hostPort" "hostNetwork") -}}true{{- end -}}
{{- end -}}

{{/* preStop sleep + drain timeout + shutdown grace + a margin for the process to exit. */}}
{{- define "parley.minGrace" -}}
{{- add .Values.termination.preStopSleepSeconds .Values.cluster.drainTimeout .Values.node.shutdownGrace -}}
{{- end -}}

{{- define "parley.gracePeriod" -}}
{{- $min := include "parley.minGrace" . | int -}}
{{- if kindIs "invalid" .Values.termination.gracePeriodSeconds -}}
{{- add $min 15 -}}
{{- else if le (int .Values.termination.gracePeriodSeconds) $min -}}
{{- fail (printf "termination.gracePeriodSeconds must exceed preStopSleepSeconds + cluster.drainTimeout + node.shutdownGrace (%d)" $min) -}}
{{- else -}}
{{- .Values.termination.gracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{/* Refusals for combinations that would deploy a broken cluster. */}}
{{- define "parley.checks" -}}
{{- if and (not (include "parley.redisEnabled" .)) (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "more than one node (replicaCount > 1 or autoscaling) needs Redis: set redis.url, redis.existingSecret or redis.bundled.enabled" -}}
{{- end -}}
{{- if and .Values.auth.existingSecret (or .Values.ice.turnSecret .Values.ice.turnPassword .Values.redis.url) -}}
{{- fail "with auth.existingSecret, put PARLEY_ICE_TURN_SECRET, PARLEY_ICE_TURN_PASSWORD and PARLEY_REDIS_URL in that Secret (or use redis.existingSecret)" -}}
{{- end -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.keys) (not .Values.auth.generate) -}}
{{- fail "no API keys: set auth.keys, auth.existingSecret or auth.generate" -}}
{{- end -}}
{{- if and (eq .Values.media.mode "loadBalancer") (lt (len .Values.media.loadBalancer.addresses) (include "parley.maxPods" . | int)) -}}
{{- fail (printf "media.loadBalancer.addresses needs one address per pod (%s)" (include "parley.maxPods" .)) -}}
{{- end -}}
{{- if and (eq .Values.media.mode "nodePort") (gt (add .Values.media.nodePort.base (include "parley.maxPods" . | int)) 32768) -}}
{{- fail "media.nodePort.base + pods must stay within the NodePort range (30000-32767)" -}}
{{- end -}}
{{- end -}}

{{/* The node's config.yaml: .Values.config, with the settings the chart owns set over it. */}}
{{- define "parley.config" -}}
{{- $v := .Values -}}
{{- $cfg := deepCopy (default (dict) $v.config) -}}
{{- $_ := set $cfg "host" "0.0.0.0" -}}
{{- $_ := set $cfg "port" ($v.node.httpPort | int) -}}
{{- $_ := set $cfg "log_level" $v.node.logLevel -}}
{{- $_ := set $cfg "log_format" $v.node.logFormat -}}
{{- $_ := set $cfg "shutdown_grace" $v.node.shutdownGrace -}}
{{- if $v.node.publicUrl -}}
{{- $_ := set $cfg "public_url" $v.node.publicUrl -}}
{{- end -}}
{{- $sfu := default (dict) (get $cfg "sfu") -}}
{{- $_ := set $sfu "udp_port" ($v.node.udpPort | int) -}}
{{- $_ := set $cfg "sfu" $sfu -}}
{{- $ice := dict -}}
{{- with $v.ice.stunUrls }}{{ $_ := set $ice "stun_urls" . }}{{ end -}}
{{- with $v.ice.turnUrls }}{{ $_ := set $ice "turn_urls" . }}{{ end -}}
{{- with $v.ice.turnUsername }}{{ $_ := set $ice "turn_username" . }}{{ end -}}
{{- if ne (int $v.ice.turnTtl) 3600 }}{{ $_ := set $ice "turn_ttl" ($v.ice.turnTtl | int) }}{{ end -}}
{{- if $ice }}{{ $_ := set $cfg "ice" $ice }}{{ end -}}
{{- if and $v.ingress.enabled $v.ingress.disablePerIpLimits -}}
{{- $sig := default (dict) (get $cfg "signaling") -}}
{{- if not (hasKey $sig "max_connections_per_ip") }}{{ $_ := set $sig "max_connections_per_ip" 0 }}{{ end -}}
{{- if not (hasKey $sig "join_rate_per_ip") }}{{ $_ := set $sig "join_rate_per_ip" 0 }}{{ end -}}
{{- $_ := set $cfg "signaling" $sig -}}
{{- end -}}
{{- if include "parley.redisEnabled" . -}}
{{- $cluster := default (dict) (get $cfg "cluster") -}}
{{- $_ := set $cluster "drain_timeout" ($v.cluster.drainTimeout | int) -}}
{{- $_ := set $cfg "cluster" $cluster -}}
{{- if $v.redis.bundled.enabled -}}
{{- $redis := default (dict) (get $cfg "redis") -}}
{{- $_ := set $redis "url" (printf "redis://%s:6379/0" (include "parley.redisName" .)) -}}
{{- $_ := set $cfg "redis" $redis -}}
{{- end -}}
{{- else if or (get $cfg "cluster") (get $cfg "redis") -}}
{{- fail "config.cluster and config.redis tune a cluster: set redis.url, redis.existingSecret or redis.bundled.enabled" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Run by pods whose UDP port (nodePort) or announced address (loadBalancer) depends on
     their ordinal; POD_NAME comes from the downward API. */}}
{{- define "parley.mediaEntry" -}}
#!/bin/sh
# Chooses this pod's media setting by its ordinal, then runs the node.
set -eu
ordinal="${POD_NAME##*-}"
{{- if eq .Values.media.mode "nodePort" }}
PARLEY_SFU_UDP_PORT=$(({{ .Values.media.nodePort.base | int }} + ordinal))
export PARLEY_SFU_UDP_PORT
{{- else }}
i=0
for address in {{ join " " .Values.media.loadBalancer.addresses }}; do
    if [ "$i" -eq "$ordinal" ]; then PARLEY_SFU_ANNOUNCED_ADDRESS="$address"; fi
    i=$((i + 1))
done
: "${PARLEY_SFU_ANNOUNCED_ADDRESS:?no media.loadBalancer.addresses entry for $POD_NAME}"
export PARLEY_SFU_ANNOUNCED_ADDRESS
{{- end }}
exec parley serve --config /etc/parley/config.yaml "$@"
{{ end -}}

{{- define "parley.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
