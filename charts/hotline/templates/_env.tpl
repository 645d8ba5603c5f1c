{{/*
THE map from values to the services' environment (docs/configuration.md). Every HOTLINE_*
name the chart sets is written exactly once, in this file: a rename is a one-line change here.
Call with (list $ "<service>").
*/}}
{{- define "hotline.env" -}}
{{- $root := index . 0 -}}{{- $svc := index . 1 -}}
{{- $v := $root.Values -}}
- {name: HOTLINE_SITE, value: {{ $v.site | quote }}}
- {name: HOTLINE_KAFKA_BOOTSTRAP, value: {{ include "hotline.kafkaBootstrap" $root | quote }}}
- {name: HOTLINE_KAFKA_FETCH_WAIT_MS, value: {{ $v.kafka.fetchWaitMs | quote }}}
- {name: HOTLINE_VAR_DIR, value: /var/lib/hotline}
- {name: HOTLINE_BIND_HOST, value: {{ (and (eq $svc "gateway") $v.gateway.bindAddress) | default "0.0.0.0" | quote }}}
- {name: HOTLINE_LOG_LEVEL, value: {{ $v.logLevel | quote }}}
{{- /* SIGTERM's drain: the gateway's live calls, the IVR's flows in progress */ -}}
{{- $drain := dict "gateway" $v.gateway.drainSeconds "ivr" $v.ivr.drainSeconds }}
{{- if hasKey $drain $svc }}
- {name: HOTLINE_DRAIN_S, value: {{ index $drain $svc | quote }}}
{{- end }}
{{- range $peer := list "gateway" "acd" "ivr" "crm" "recorder" }}
- {name: {{ printf "HOTLINE_%s_GRPC_PORT" (upper $peer) }}, value: {{ index $v.ports.grpc $peer | quote }}}
- {name: {{ printf "HOTLINE_%s_METRICS_PORT" (upper $peer) }}, value: {{ index $v.ports.metrics $peer | quote }}}
- {name: {{ printf "HOTLINE_%s_HOST" (upper $peer) }}, value: {{ include "hotline.peerHost" (list $root $peer) | quote }}}
{{- end }}
{{- if $v.grpcTls.insecureDevelopment }}
- {name: HOTLINE_GRPC_INSECURE, value: "true"}
{{- else }}
- {name: HOTLINE_TLS_CA, value: /etc/hotline/tls/ca.crt}
- {name: HOTLINE_TLS_CERT, value: /etc/hotline/tls/tls.crt}
- {name: HOTLINE_TLS_KEY, value: /etc/hotline/tls/tls.key}
{{- end }}
{{- if $v.monitoring.metricsAuth.enabled }}
- {name: HOTLINE_METRICS_TOKEN_FILE, value: /etc/hotline/metrics/token}
{{- end }}
- {name: HOTLINE_TLS_TRUST_DOMAIN, value: {{ include "hotline.trustDomain" $root | quote }}}
{{- with $v.tracing.otlpEndpoint }}
- {name: HOTLINE_OTLP_ENDPOINT, value: {{ . | quote }}}
{{- end }}
{{- if eq $svc "gateway" }}
- name: HOTLINE_SIP_HOST
{{- if $v.gateway.sip.advertisedAddress }}
  value: {{ $v.gateway.sip.advertisedAddress | quote }}
{{- else }}
  valueFrom: {fieldRef: {fieldPath: status.hostIP}}
{{- end }}
- {name: HOTLINE_SIP_PORT, value: {{ $v.gateway.sip.port | quote }}}
- {name: HOTLINE_SIP_REALM, value: {{ $v.gateway.sip.realm | quote }}}
- {name: HOTLINE_RTP_LOW, value: {{ $v.gateway.rtp.low | quote }}}
- {name: HOTLINE_RTP_HIGH, value: {{ $v.gateway.rtp.high | quote }}}
- {name: HOTLINE_GATEWAY_MAX_CALLS, value: {{ $v.gateway.capacity.maxCalls | quote }}}
- {name: HOTLINE_GATEWAY_MAX_CPS, value: {{ $v.gateway.capacity.maxCallsPerSecond | quote }}}
- {name: HOTLINE_GATEWAY_REALTIME_PRIORITY, value: {{ $v.gateway.realtimePriority | quote }}}
{{- if gt (int $v.gateway.realtimePriority) 0 }}
- {name: HOTLINE_GATEWAY_USER, value: "10001:10001"}
{{- end }}
- {name: HOTLINE_TRUNK_DIDS, value: {{ join "," $v.gateway.trunk.dids | quote }}}
- {name: HOTLINE_TRUNK_ALLOW, value: {{ join "," $v.gateway.trunk.allow | quote }}}
- {name: HOTLINE_TRUNK_TRUST_PAI, value: {{ $v.gateway.trunk.trustPai | default false | quote }}}
{{- with $v.gateway.sipTrunk }}{{ if .host }}
- {name: HOTLINE_SIP_TRUNK_HOST, value: {{ .host | quote }}}
- {name: HOTLINE_SIP_TRUNK_PORT, value: {{ .port | quote }}}
- {name: HOTLINE_SIP_TRUNK_TRANSPORT, value: {{ .transport | quote }}}
- {name: HOTLINE_SIP_TRUNK_NAME, value: {{ .name | quote }}}
- {name: HOTLINE_SIP_TRUNK_DOMAIN, value: {{ .domain | quote }}}
- {name: HOTLINE_SIP_TRUNK_USERNAME, value: {{ .username | quote }}}
{{- if or .existingSecret .password }}
- name: HOTLINE_SIP_TRUNK_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret | default (include "hotline.name" (list $root "sip-trunk")) }}
      key: {{ ternary .existingSecretKey "password" (ne .existingSecret "") }}
{{- end }}
- {name: HOTLINE_SIP_TRUNK_REALM, value: {{ .realm | quote }}}
- {name: HOTLINE_SIP_TRUNK_REGISTER, value: {{ .register | quote }}}
- {name: HOTLINE_SIP_TRUNK_REGISTER_EXPIRES, value: {{ .registerExpires | quote }}}
- {name: HOTLINE_SIP_TRUNK_KEEPALIVE_S, value: {{ .keepaliveSeconds | quote }}}
- {name: HOTLINE_SIP_TRUNK_NUMBER_IN, value: {{ .numberIn | quote }}}
- {name: HOTLINE_SIP_TRUNK_NUMBER_OUT, value: {{ .numberOut | quote }}}
- {name: HOTLINE_SIP_TRUNK_CALLER_ID, value: {{ .callerId | quote }}}
- {name: HOTLINE_SIP_TRUNK_CODECS, value: {{ join "," .codecs | quote }}}
- {name: HOTLINE_SIP_TRUNK_MAX_CALLS, value: {{ .maxCalls | quote }}}
- {name: HOTLINE_SIP_TRUNK_CPS, value: {{ .callsPerSecond | quote }}}
- {name: HOTLINE_SIP_TRUNK_TRUST_PAI, value: {{ .trustPai | quote }}}
- {name: HOTLINE_SIP_TRUNK_SESSION_EXPIRES, value: {{ .sessionExpires | quote }}}
{{- end }}{{ end }}
{{- if or $v.gateway.extensions.existingSecret $v.gateway.extensions.ha1 }}
- {name: HOTLINE_GATEWAY_EXTENSIONS, value: /etc/hotline/gateway/extensions.yaml}
{{- end }}
- {name: HOTLINE_ANALOG_CARD, value: {{ $v.gateway.analog.card | quote }}}
- {name: HOTLINE_ANALOG_DID, value: {{ $v.gateway.analog.did | quote }}}
- {name: HOTLINE_ANALOG_LAW, value: {{ $v.gateway.analog.law | quote }}}
- {name: HOTLINE_SIM_CONTROL_PORT, value: {{ $v.gateway.analog.simControlPort | quote }}}
{{- else if eq $svc "acd" }}
- name: HOTLINE_ACD_QUEUES
  valueFrom: {configMapKeyRef: {name: {{ include "hotline.name" (list $root "acd") }}, key: queues}}
- {name: HOTLINE_RING_TIMEOUT_S, value: {{ $v.acd.ringTimeoutSeconds | quote }}}
- {name: HOTLINE_WRAP_UP_S, value: {{ $v.acd.wrapUpSeconds | quote }}}
{{- if gt (int $v.acd.replicas) 1 }}
- {name: HOTLINE_ACD_LEASE, value: kubernetes}
- {name: HOTLINE_ACD_LEASE_NAME, value: {{ include "hotline.name" (list $root "acd") | quote }}}
{{- end }}
{{- else if eq $svc "ivr" }}
{{- if $v.ivr.flows }}
- {name: HOTLINE_IVR_FLOWS, value: /etc/hotline/ivr/flows.yaml}
{{- end }}
{{- else if eq $svc "crm" }}
- {name: HOTLINE_HTTP_PORT, value: {{ $v.ports.http | quote }}}
{{- include "hotline.databaseEnv" (list $root "crm") }}
{{- else if eq $svc "recorder" }}
{{- include "hotline.databaseEnv" (list $root "recorder") }}
{{- end }}
{{- end -}}

{{/* The service's own database URL (HOTLINE_DATABASE_URL in its pod or migration Job). */}}
{{- define "hotline.databaseEnv" -}}
{{- $root := index . 0 -}}{{- $svc := index . 1 -}}
{{- $db := $root.Values.database -}}
{{- if ne $db.mode "sqlite" }}
{{- $own := index $db $svc }}
{{- $pg := include "hotline.pgCluster" $root }}
{{- if eq $db.mode "cnpg" }}
- name: DB_USER
  valueFrom: {secretKeyRef: {name: {{ printf "%s-app" $pg }}, key: username}}
- name: DB_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ printf "%s-app" $pg }}, key: password}}
{{- end }}
- name: HOTLINE_DATABASE_URL
{{- if eq $db.mode "cnpg" }}
  value: {{ printf "postgresql+asyncpg://$(DB_USER):$(DB_PASSWORD)@%s-rw:5432/%s" $pg $db.cnpg.database | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ $own.existingSecret | default (include "hotline.name" (list $root "database")) }}
      key: {{ ternary $own.existingSecretKey (printf "%s-url" $svc) (ne $own.existingSecret "") }}
{{- end }}
{{- end }}
{{- end -}}
