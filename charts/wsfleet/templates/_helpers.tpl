{{/* The release's full name, capped at the 63 characters a label value allows. */}}
{{- define "wsfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator pods; never change after install. */}}
{{- define "wsfleet.selectorLabels" -}}
app.kubernetes.io/name: wsfleet-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "wsfleet.labels" -}}
{{ include "wsfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: wsfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wsfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wsfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository[:tag][@digest] from an image block; an empty tag falls back to appVersion. */}}
{{- define "wsfleet.imageRef" -}}
{{- $image := index . 0 -}}
{{- $appVersion := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "wsfleet.operatorImage" -}}
{{- include "wsfleet.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{/* Gateway pods run the operator's image unless gateway.image.repository says otherwise. */}}
{{- define "wsfleet.gatewayImage" -}}
{{- if .Values.gateway.image.repository -}}
{{- include "wsfleet.imageRef" (list .Values.gateway.image .Chart.AppVersion) -}}
{{- else -}}
{{- include "wsfleet.operatorImage" . -}}
{{- end -}}
{{- end -}}

{{/*
The permissions the operator uses on WebSocketServices and their children; nothing more.
Children are written only with server-side apply (patch; create because an apply may create),
read back (get) and watched (list/watch). Status is written with server-side apply too; the
spec never.
The operator deletes only an HPA (when autoscaling is dropped from the spec); other children
go with their owner through garbage collection. Delete on the other child kinds, and update on
websocketservices/finalizers, are for the OwnerReferencesPermissionEnforcement admission
plugin: an update that changes a child's ownerReferences needs delete on that child, and one
that sets blockOwnerDeletion needs update on the owner's finalizers. Applying to children an
older operator created without blockOwnerDeletion is such an update.
*/}}
{{- define "wsfleet.operatorRules" -}}
- apiGroups: [wsfleet.io]
  resources: [websocketservices]
  verbs: [get, list, watch]
- apiGroups: [wsfleet.io]
  resources: [websocketservices/status]
  verbs: [patch]
- apiGroups: [wsfleet.io]
  resources: [websocketservices/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [configmaps, secrets, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
