{{/* Names, labels, image and the pieces every workload shares. */}}

{{- define "hotline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>" ; call with (list $ "acd") */}}
{{- define "hotline.name" -}}
{{- printf "%s-%s" (include "hotline.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{- define "hotline.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/part-of: hotline
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
hotline.io/site: {{ $root.Values.site | quote }}
{{- end -}}

{{- define "hotline.selector" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{- define "hotline.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* The Kafka bootstrap servers: Strimzi's bootstrap Service or the external list. */}}
{{- define "hotline.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap:9092" (include "hotline.kafkaCluster" .) -}}
{{- else -}}
{{- required "kafka.bootstrap is required when kafka.strimzi.enabled is false" .Values.kafka.bootstrap -}}
{{- end -}}
{{- end -}}

{{- define "hotline.kafkaCluster" -}}
{{- .Values.kafka.strimzi.clusterName | default (include "hotline.name" (list . "kafka")) -}}
{{- end -}}

{{- define "hotline.pgCluster" -}}
{{- .Values.database.cnpg.clusterName | default (include "hotline.name" (list . "pg")) -}}
{{- end -}}

{{/* Where a peer's gRPC is reached: values.peerHosts.<svc> or the chart's Service. */}}
{{- define "hotline.peerHost" -}}
{{- $root := index . 0 -}}{{- $svc := index . 1 -}}
{{- index $root.Values.peerHosts $svc | default (include "hotline.name" (list $root $svc)) -}}
{{- end -}}

{{- define "hotline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hotline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Probes on the side server: startup, liveness (/healthz), readiness (/readyz). */}}
{{- define "hotline.probes" -}}
{{- $startPath := "/healthz" -}}{{- $startTries := 60 -}}
{{- if gt (len .) 2 }}{{ $startPath = index . 2 }}{{ $startTries = index . 3 }}{{ end -}}
startupProbe:
  httpGet: {path: {{ $startPath }}, port: metrics}
  periodSeconds: 2
  failureThreshold: {{ $startTries }}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  {{- /* the ACD's: every second, so the Service follows a takeover at once */}}
  periodSeconds: {{ eq (index . 1) "acd" | ternary 1 5 }}
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "hotline.scrapeAnnotations" -}}
{{- $root := index . 0 -}}{{- $svc := index . 1 -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index $root.Values.ports.metrics $svc | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{- define "hotline.topologySpread" -}}
{{- $root := index . 0 -}}{{- $svc := index . 1 -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "hotline.selector" (list $root $svc) | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "hotline.selector" (list $root $svc) | nindent 8 }}
{{- end -}}

{{- define "hotline.queueNames" -}}
{{- $names := list -}}
{{- range .Values.acd.queues }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Each queue with its service-level settings, defaults filled in from monitoring.* */}}
{{- define "hotline.queues" -}}
{{- $m := .Values.monitoring -}}
{{- range .Values.acd.queues }}
- name: {{ .name }}
  serviceLevelSeconds: {{ .serviceLevelSeconds | default $m.serviceLevel.thresholdSeconds }}
  serviceLevelTarget: {{ .serviceLevelTarget | default $m.serviceLevel.target }}
  countAbandoned: {{ ternary .countAbandoned $m.serviceLevel.countAbandoned (hasKey . "countAbandoned") }}
  oldestWaitAlertSeconds: {{ .oldestWaitAlertSeconds | default $m.alerts.oldestWaitSeconds }}
  abandonRateAlert: {{ .abandonRateAlert | default $m.alerts.abandonRate }}
{{- end }}
{{- end -}}

{{/*
The PrometheusRule spec: the rule files of rules/ (checked and tested by promtool as they are)
with their release-specific pieces filled in, plus a generated group of per-queue settings
(service-level threshold and target, alert thresholds) that those rules join on.
*/}}
{{- define "hotline.rules" -}}
{{- $m := .Values.monitoring -}}
groups:
  - name: hotline-settings
    interval: 1m
    rules:
      {{- range (include "hotline.queues" . | fromYamlArray) }}
      - record: hotline:queue_service_level_threshold_seconds
        expr: vector({{ .serviceLevelSeconds }})
        labels: {site: {{ $.Values.site | quote }}, queue: {{ .name | quote }}, le: {{ printf "%.1f" (float64 .serviceLevelSeconds) | quote }}}
      - record: hotline:queue_service_level_target
        expr: vector({{ .serviceLevelTarget }})
        labels: {site: {{ $.Values.site | quote }}, queue: {{ .name | quote }}}
      - record: hotline:queue_service_level_abandon_weight
        expr: vector({{ ternary 1 0 .countAbandoned }})
        labels: {site: {{ $.Values.site | quote }}, queue: {{ .name | quote }}}
      - record: hotline:queue_oldest_wait_alert_seconds
        expr: vector({{ .oldestWaitAlertSeconds }})
        labels: {site: {{ $.Values.site | quote }}, queue: {{ .name | quote }}}
      - record: hotline:queue_abandon_rate_alert
        expr: vector({{ .abandonRateAlert }})
        labels: {site: {{ $.Values.site | quote }}, queue: {{ .name | quote }}}
      {{- end }}
      - record: hotline:today_utc_offset_seconds
        expr: vector({{ int $m.todayUtcOffsetSeconds }})
        labels: {site: {{ .Values.site | quote }}}
      - record: hotline:gateway_card_configured
        expr: vector({{ ternary 1 0 (hasPrefix "dahdi:" (toString .Values.gateway.analog.card)) }})
        labels: {site: {{ .Values.site | quote }}}
{{- range $path, $_ := .Files.Glob "rules/*.rules.yaml" }}
{{- $text := $.Files.Get $path }}
{{- $text = $text | replace "https://hotline.invalid/runbook.md" $m.runbookUrl }}
{{- range (fromYaml $text).groups }}
  - {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* gRPC mutual TLS: the Secret of a service ; call with (list $ "acd") */}}
{{- define "hotline.grpcTlsSecret" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" ($root.Values.grpcTls.secretPrefix | default (include "hotline.name" (list $root "grpc-tls"))) (index . 1) -}}
{{- end -}}

{{- define "hotline.trustDomain" -}}
{{- .Values.grpcTls.trustDomain | default (printf "%s.%s" .Release.Name .Release.Namespace) -}}
{{- end -}}

{{/* the volume and its mount, for a service's pod ; call with (list $ "acd") */}}
{{- define "hotline.grpcTlsVolume" -}}
{{- if not (index . 0).Values.grpcTls.insecureDevelopment }}
- name: grpc-tls
  secret:
    secretName: {{ include "hotline.grpcTlsSecret" . }}
    optional: false
    defaultMode: 0440
    items: [{key: ca.crt, path: ca.crt}, {key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- end -}}

{{- define "hotline.grpcTlsMount" -}}
{{- if not .Values.grpcTls.insecureDevelopment }}
- {name: grpc-tls, mountPath: /etc/hotline/tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* /metrics bearer token (monitoring.metricsAuth) */}}
{{- define "hotline.metricsTokenSecret" -}}
{{- .Values.monitoring.metricsAuth.existingSecret | default (include "hotline.name" (list . "metrics-token")) -}}
{{- end -}}

{{- define "hotline.metricsTokenVolume" -}}
{{- if .Values.monitoring.metricsAuth.enabled }}
- name: metrics-token
  secret:
    secretName: {{ include "hotline.metricsTokenSecret" . }}
    optional: false
    defaultMode: 0440
    items: [{key: token, path: token}]
{{- end }}
{{- end -}}

{{- define "hotline.metricsTokenMount" -}}
{{- if .Values.monitoring.metricsAuth.enabled }}
- {name: metrics-token, mountPath: /etc/hotline/metrics, readOnly: true}
{{- end }}
{{- end -}}
