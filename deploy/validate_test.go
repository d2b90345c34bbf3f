package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The tests run in deploy/ (go test's working directory is the package's).

// The gateway's listeners in every example.
const (
	adminPort = 8081
	mainPort  = 8080
	wsifyPort = 3000
)

// ---------------------------------------------------------------- helpers

// yamlDocs decodes every document of a YAML file into generic maps.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", path, err)
		}
		if doc == nil {
			continue // an empty document (a trailing ---)
		}
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

func yamlDoc(t *testing.T, path string) map[string]any {
	t.Helper()
	docs := yamlDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", path, len(docs))
	}
	return docs[0]
}

// get walks maps and lists: get(m, "spec", "template", "spec", "containers", 0).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func dict(v any, path ...any) map[string]any {
	m, _ := get(v, path...).(map[string]any)
	return m
}

func num(v any, path ...any) (int, bool) {
	switch n := get(v, path...).(type) {
	case int:
		return n, true
	case float64:
		return int(n), true
	case string:
		i, err := strconv.Atoi(n)
		return i, err == nil
	}
	return 0, false
}

func mustDuration(t *testing.T, where, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %q is not a duration: %v", where, s, err)
	}
	return d
}

// checkStop: drain < shutdown < the supervisor's stop budget, with room.
func checkStop(t *testing.T, where string, drain, shutdown, stop time.Duration) {
	t.Helper()
	if drain <= 0 || shutdown <= drain {
		t.Errorf("%s: drain window %v must be positive and below the shutdown timeout %v (drain + grace)", where, drain, shutdown)
	}
	if stop < shutdown+5*time.Second {
		t.Errorf("%s: stop budget %v leaves under 5 s beyond the shutdown timeout %v: the process may be killed mid-drain", where, stop, shutdown)
	}
	if stop < 30*time.Second {
		t.Errorf("%s: stop budget %v is under 30 s", where, stop)
	}
}

// metricRE finds gateway metric names in PromQL and in the READMEs.
var metricRE = regexp.MustCompile(`\bgateway_[a-z_]+`)

// knownMetrics: the gateway_* names in README.md and the protocol READMEs.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, f := range []string{"../README.md", "../kosync/README.md", "../wsify/README.md", "../hypothesis/README.md"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, m := range metricRE.FindAllString(string(data), -1) {
			known[m] = true
		}
	}
	if !known["gateway_connections"] {
		t.Fatal("README.md lists no gateway_connections: cannot find its metric list")
	}
	return known
}

// checkMetrics reports every gateway_* name in exprs that no README lists
// (a histogram's _bucket, _sum and _count series count as its name).
func checkMetrics(t *testing.T, where string, exprs []string) {
	t.Helper()
	known := knownMetrics(t)
	seen := 0
	for _, e := range exprs {
		for _, m := range metricRE.FindAllString(e, -1) {
			seen++
			if known[m] {
				continue
			}
			base := m
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suf)
			}
			if base != m && known[base] {
				continue
			}
			t.Errorf("%s: metric %s is not in README.md's metric list (nor a protocol README): %s", where, m, e)
		}
	}
	if seen == 0 {
		t.Errorf("%s: no gateway_* metric found in its expressions", where)
	}
}

// ---------------------------------------------------------------- all YAML

func TestYAMLFilesParse(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		n++
		yamlDocs(t, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found %d YAML files under deploy/, want compose, prometheus, alerts, grafana and k8s ones", n)
	}
}

// ---------------------------------------------------------------- Kubernetes

type k8sObject struct {
	file string
	doc  map[string]any
}

func k8sObjects(t *testing.T) map[string]k8sObject {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for i, doc := range yamlDocs(t, f) {
			kind, name := str(doc, "kind"), str(doc, "metadata", "name")
			if str(doc, "apiVersion") == "" || kind == "" || name == "" {
				t.Errorf("%s document %d: apiVersion, kind and metadata.name are required", f, i+1)
				continue
			}
			if str(doc, "metadata", "namespace") != "" {
				t.Errorf("%s: %s/%s pins a namespace; the manifests are namespace-free", f, kind, name)
			}
			key := kind + "/" + name
			if _, dup := objs[key]; dup {
				t.Errorf("%s: %s defined twice", f, key)
			}
			objs[key] = k8sObject{f, doc}
		}
	}
	return objs
}

// labelsMatch: every selector label is on the pod.
func labelsMatch(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestK8sManifests(t *testing.T) {
	objs := k8sObjects(t)
	for _, want := range []string{"Deployment/gateway", "Service/gateway", "Service/gateway-admin",
		"PodDisruptionBudget/gateway", "Secret/gateway-secrets", "Deployment/redis", "Service/redis"} {
		if _, ok := objs[want]; !ok {
			t.Errorf("k8s: no %s", want)
		}
	}
	dep, ok := objs["Deployment/gateway"]
	if !ok {
		t.FailNow()
	}
	d := dep.doc
	if r, _ := num(d, "spec", "replicas"); r < 2 {
		t.Errorf("deployment: replicas %d, want at least 2", r)
	}
	podLabels := dict(d, "spec", "template", "metadata", "labels")
	if !labelsMatch(dict(d, "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("deployment: selector does not match the pod template's labels")
	}
	pod := dict(d, "spec", "template", "spec")
	grace, ok := num(pod, "terminationGracePeriodSeconds")
	if !ok || grace < 30 {
		t.Errorf("deployment: terminationGracePeriodSeconds %d, want >= 30 (drain window + shutdown grace)", grace)
	}
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("deployment: pod securityContext.runAsNonRoot must be true")
	}
	if len(list(pod, "topologySpreadConstraints")) == 0 {
		t.Errorf("deployment: no topologySpreadConstraints")
	}
	ctrs := list(pod, "containers")
	if len(ctrs) != 1 {
		t.Fatalf("deployment: %d containers, want 1", len(ctrs))
	}
	c := ctrs[0]
	if get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Errorf("deployment: container securityContext.readOnlyRootFilesystem must be true")
	}
	if get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("deployment: container securityContext.allowPrivilegeEscalation must be false")
	}
	if dict(c, "resources", "requests") == nil || dict(c, "resources", "limits") == nil {
		t.Errorf("deployment: resources need requests and limits")
	}

	// Ports, by name and number.
	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		n, _ := num(p, "containerPort")
		ports[str(p, "name")] = n
	}
	for name, want := range map[string]int{"http": mainPort, "wsify": wsifyPort, "admin": adminPort} {
		if ports[name] != want {
			t.Errorf("deployment: container port %q = %d, want %d", name, ports[name], want)
		}
	}
	probePort := func(probe string) int {
		switch p := get(c, probe, "httpGet", "port").(type) {
		case int:
			return p
		case string:
			return ports[p]
		}
		return 0
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("deployment: %s path %q, want %q", probe, got, path)
		}
		if got := probePort(probe); got != adminPort {
			t.Errorf("deployment: %s port %d, want the admin port %d", probe, got, adminPort)
		}
		if p, ok := num(c, probe, "periodSeconds"); !ok || p < 1 {
			t.Errorf("deployment: %s needs periodSeconds", probe)
		}
	}
	// Liveness must survive a slow node: at least 30 s of failures.
	lp, _ := num(c, "livenessProbe", "periodSeconds")
	lf, _ := num(c, "livenessProbe", "failureThreshold")
	if lp*lf < 30 {
		t.Errorf("deployment: livenessProbe restarts after %d s of failures, want >= 30", lp*lf)
	}
	if get(c, "lifecycle", "preStop") != nil {
		t.Errorf("deployment: no preStop hook expected (readiness turns 503 at SIGTERM; distroless has no shell)")
	}

	// Arguments: admin on all interfaces, Redis, the data dir.
	var args []string
	for _, a := range list(c, "args") {
		args = append(args, fmt.Sprint(a))
	}
	argv := strings.Join(args, " ")
	for _, want := range []string{"serve", "--admin-listen 0.0.0.0:8081", "--redis redis://redis:6379/0", "--data-dir /var/lib/gateway"} {
		if !strings.Contains(argv, want) {
			t.Errorf("deployment: args %q lack %q", argv, want)
		}
	}

	// Environment: secrets from the Secret, the drain settings.
	env := map[string]any{}
	for _, e := range list(c, "env") {
		env[str(e, "name")] = e
	}
	secret := objs["Secret/gateway-secrets"].doc
	for _, name := range []string{"GATEWAY_SECRET", "GATEWAY_ADMIN_TOKEN"} {
		ref := dict(env[name], "valueFrom", "secretKeyRef")
		if ref == nil {
			t.Errorf("deployment: %s must come from a secretKeyRef", name)
			continue
		}
		if str(ref, "name") != "gateway-secrets" {
			t.Errorf("deployment: %s refers to Secret %q, want gateway-secrets", name, str(ref, "name"))
		}
		v := str(secret, "stringData", str(ref, "key"))
		if v == "" {
			t.Errorf("secret.example.yaml: no key %q for %s", str(ref, "key"), name)
		} else if !strings.Contains(v, "REPLACE") {
			t.Errorf("secret.example.yaml: %s's value must be an obvious placeholder (REPLACE...)", name)
		}
	}
	drain := mustDuration(t, "deployment GATEWAY_DRAIN_WINDOW", str(env["GATEWAY_DRAIN_WINDOW"], "value"))
	shutdown := mustDuration(t, "deployment GATEWAY_SHUTDOWN_TIMEOUT", str(env["GATEWAY_SHUTDOWN_TIMEOUT"], "value"))
	checkStop(t, "deployment", drain, shutdown, time.Duration(grace)*time.Second)

	// The data dir is an emptyDir volume.
	var dataVol string
	for _, m := range list(c, "volumeMounts") {
		if str(m, "mountPath") == "/var/lib/gateway" {
			dataVol = str(m, "name")
		}
	}
	found := false
	for _, v := range list(pod, "volumes") {
		if str(v, "name") == dataVol && get(v, "emptyDir") != nil {
			found = true
		}
	}
	if dataVol == "" || !found {
		t.Errorf("deployment: /var/lib/gateway must be mounted from an emptyDir volume")
	}

	// Services select the pods and expose the right ports.
	svcPorts := func(key string) map[int]bool {
		s := objs[key].doc
		if !labelsMatch(dict(s, "spec", "selector"), podLabels) {
			t.Errorf("%s: selector does not match the gateway pods", key)
		}
		got := map[int]bool{}
		for _, p := range list(s, "spec", "ports") {
			n, _ := num(p, "port")
			got[n] = true
			switch tp := get(p, "targetPort").(type) {
			case string:
				if ports[tp] == 0 {
					t.Errorf("%s: targetPort %q is no container port", key, tp)
				}
			}
		}
		return got
	}
	if p := svcPorts("Service/gateway"); !p[mainPort] || !p[wsifyPort] || p[adminPort] {
		t.Errorf("Service/gateway: ports %v, want %d and %d and never the admin port", p, mainPort, wsifyPort)
	}
	if p := svcPorts("Service/gateway-admin"); !p[adminPort] || len(p) != 1 {
		t.Errorf("Service/gateway-admin: ports %v, want only %d", p, adminPort)
	}
	if typ := str(objs["Service/gateway-admin"].doc, "spec", "type"); typ != "" && typ != "ClusterIP" {
		t.Errorf("Service/gateway-admin: type %s, want ClusterIP", typ)
	}

	// PDB.
	pdb := objs["PodDisruptionBudget/gateway"].doc
	if m, ok := num(pdb, "spec", "minAvailable"); !ok || m != 1 {
		t.Errorf("pdb: minAvailable %v, want 1", get(pdb, "spec", "minAvailable"))
	}
	if !labelsMatch(dict(pdb, "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("pdb: selector does not match the gateway pods")
	}

	// Redis is reachable at the name in --redis.
	if p := objs["Service/redis"].doc; p != nil {
		n, _ := num(p, "spec", "ports", 0, "port")
		if n != 6379 {
			t.Errorf("Service/redis: port %d, want 6379", n)
		}
	}
	checkK8sRedisPersistence(t, objs)
}

// ---------------------------------------------------------------- Redis persistence
//
// Redis holds the revocations and the KOsync data: every shipped Redis runs
// with AOF persistence on storage that outlives the process.

// redisPersistent checks a redis-server command line: --appendonly yes,
// and no --appendfsync no (which leaves flushing to the kernel).
func redisPersistent(t *testing.T, where string, argv []string) {
	t.Helper()
	if len(argv) == 0 || argv[0] != "redis-server" {
		t.Errorf("%s: Redis command %q must start with redis-server and its options", where, argv)
		return
	}
	opts := map[string]string{}
	for i := 1; i+1 < len(argv); i += 2 {
		opts[argv[i]] = argv[i+1]
	}
	if opts["--appendonly"] != "yes" {
		t.Errorf("%s: Redis runs without AOF persistence (%q): want --appendonly yes", where, argv)
	}
	if f, ok := opts["--appendfsync"]; ok && f != "everysec" && f != "always" {
		t.Errorf("%s: --appendfsync %s, want everysec or always", where, f)
	}
}

func stringsOf(l []any) []string {
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = fmt.Sprint(v)
	}
	return out
}

func checkK8sRedisPersistence(t *testing.T, objs map[string]k8sObject) {
	t.Helper()
	dep, ok := objs["Deployment/redis"]
	if !ok {
		return
	}
	pod := dict(dep.doc, "spec", "template", "spec")
	c := get(pod, "containers", 0)
	argv := stringsOf(list(c, "command"))
	argv = append(argv, stringsOf(list(c, "args"))...)
	redisPersistent(t, "k8s Deployment/redis", argv)
	// /data (the image's working directory, where the AOF goes) comes from
	// a claim that exists, not from an emptyDir that dies with the pod.
	var volume string
	for _, m := range list(c, "volumeMounts") {
		if str(m, "mountPath") == "/data" {
			volume = str(m, "name")
		}
	}
	if volume == "" {
		t.Fatalf("k8s Deployment/redis: nothing mounted at /data")
	}
	var claim string
	for _, v := range list(pod, "volumes") {
		if str(v, "name") == volume {
			claim = str(v, "persistentVolumeClaim", "claimName")
		}
	}
	if claim == "" {
		t.Errorf("k8s Deployment/redis: /data (volume %q) is not a persistentVolumeClaim", volume)
	} else if _, ok := objs["PersistentVolumeClaim/"+claim]; !ok {
		t.Errorf("k8s Deployment/redis: claim %q is not defined", claim)
	}
	if r, _ := num(dep.doc, "spec", "replicas"); r != 1 || str(dep.doc, "spec", "strategy", "type") != "Recreate" {
		t.Errorf("k8s Deployment/redis: want 1 replica and strategy Recreate (one pod at a time on a ReadWriteOnce claim)")
	}
}

func checkComposeRedisPersistence(t *testing.T, c map[string]any, service string) {
	t.Helper()
	svc := dict(c, "services", service)
	var argv []string
	switch cmd := get(svc, "command").(type) {
	case []any:
		argv = stringsOf(cmd)
	case string:
		argv = strings.Fields(cmd)
	}
	redisPersistent(t, "compose "+service, argv)
	var volume string
	for _, v := range list(svc, "volumes") {
		src, dst, _ := strings.Cut(fmt.Sprint(v), ":")
		if strings.TrimSuffix(dst, ":rw") == "/data" {
			volume = src
		}
	}
	switch {
	case volume == "":
		t.Errorf("compose %s: no volume at /data: the AOF would die with the container", service)
	case !strings.HasPrefix(volume, ".") && !strings.HasPrefix(volume, "/"):
		if _, ok := dict(c, "volumes")[volume]; !ok {
			t.Errorf("compose %s: named volume %q is not declared under volumes:", service, volume)
		}
	}
}

func TestKustomization(t *testing.T) {
	k := yamlDoc(t, "k8s/kustomization.yaml")
	if str(k, "kind") != "Kustomization" || str(k, "apiVersion") == "" {
		t.Errorf("kustomization.yaml: kind Kustomization and an apiVersion required")
	}
	var listed []string
	for _, r := range list(k, "resources") {
		listed = append(listed, fmt.Sprint(r))
	}
	// Every manifest but the example Secret: `kubectl apply -k` must never
	// create or overwrite the Secret (a new secret invalidates every key).
	files, _ := filepath.Glob("k8s/*.yaml")
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !strings.HasSuffix(b, ".example.yaml") {
			want = append(want, b)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("kustomization.yaml resources %v, want every manifest of k8s/ but the *.example.yaml ones: %v", listed, want)
	}
	for _, objs := range k8sObjects(t) {
		if str(objs.doc, "kind") == "Secret" && slices.Contains(listed, filepath.Base(objs.file)) {
			t.Errorf("kustomization.yaml lists %s, a Secret: kubectl apply -k would overwrite the real one", objs.file)
		}
	}

	// kubectl kustomize builds offline when kubectl is installed.
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not on PATH: `kubectl kustomize deploy/k8s` not tried")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "kustomize", "k8s").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize k8s: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("kind: PodDisruptionBudget")) {
		t.Errorf("kubectl kustomize k8s: no PodDisruptionBudget in the output")
	}
}

// ---------------------------------------------------------------- compose

// composeEnv returns a service's environment whether it is a map or a list.
func composeEnv(svc any) map[string]string {
	env := map[string]string{}
	switch e := get(svc, "environment").(type) {
	case map[string]any:
		for k, v := range e {
			env[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			env[k] = v
		}
	}
	return env
}

func TestCompose(t *testing.T) {
	c := yamlDoc(t, "compose.yaml")
	services := dict(c, "services")
	var gateways []string
	for name, svc := range services {
		if str(svc, "build", "dockerfile") == "deploy/Dockerfile" || strings.Contains(str(svc, "image"), "gateway") {
			gateways = append(gateways, name)
		}
	}
	slices.Sort(gateways)
	if len(gateways) != 2 {
		t.Fatalf("compose: gateway services %v, want two", gateways)
	}
	var secret, redis, token string
	hostPorts := map[string]string{}
	for i, name := range gateways {
		svc := services[name]
		env := composeEnv(svc)
		if env["GATEWAY_SECRET"] == "" || env["GATEWAY_ADMIN_TOKEN"] == "" || env["GATEWAY_REDIS"] == "" {
			t.Errorf("compose %s: GATEWAY_SECRET, GATEWAY_ADMIN_TOKEN and GATEWAY_REDIS are required", name)
		}
		if i == 0 {
			secret, redis, token = env["GATEWAY_SECRET"], env["GATEWAY_REDIS"], env["GATEWAY_ADMIN_TOKEN"]
		} else {
			if env["GATEWAY_SECRET"] != secret {
				t.Errorf("compose: %s and %s do not share GATEWAY_SECRET", gateways[0], name)
			}
			if env["GATEWAY_REDIS"] != redis {
				t.Errorf("compose: %s and %s do not share GATEWAY_REDIS", gateways[0], name)
			}
			if env["GATEWAY_ADMIN_TOKEN"] != token {
				t.Errorf("compose: %s and %s have different admin tokens", gateways[0], name)
			}
		}
		grace := mustDuration(t, "compose "+name+" stop_grace_period", str(svc, "stop_grace_period"))
		checkStop(t, "compose "+name,
			mustDuration(t, "compose GATEWAY_DRAIN_WINDOW", env["GATEWAY_DRAIN_WINDOW"]),
			mustDuration(t, "compose GATEWAY_SHUTDOWN_TIMEOUT", env["GATEWAY_SHUTDOWN_TIMEOUT"]), grace)
		if _, ok := get(svc, "depends_on", "redis").(map[string]any); !ok {
			t.Errorf("compose %s: must depend on redis", name)
		}
		for _, p := range list(svc, "ports") {
			ps := fmt.Sprint(p)
			host := ps[:strings.LastIndex(ps, ":")]
			if other, dup := hostPorts[host]; dup {
				t.Errorf("compose: host port %s published by %s and %s", host, other, name)
			}
			hostPorts[host] = name
			if strings.HasSuffix(ps, ":8081") && !strings.HasPrefix(ps, "127.0.0.1:") {
				t.Errorf("compose %s: the admin port must be published on 127.0.0.1 only, got %s", name, ps)
			}
		}
	}
	// No default: a secret written in compose.yaml is public.
	if !strings.HasPrefix(secret, "${GATEWAY_SECRET:?") || !strings.HasPrefix(token, "${GATEWAY_ADMIN_TOKEN:?") {
		t.Errorf("compose: GATEWAY_SECRET %q and GATEWAY_ADMIN_TOKEN %q must be required from deploy/.env (${VAR:?message}), with no default", secret, token)
	}
	m := regexp.MustCompile(`^redis://([a-z0-9-]+):6379(/\d+)?$`).FindStringSubmatch(redis)
	if m == nil {
		t.Fatalf("compose: GATEWAY_REDIS %q is not redis://<service>:6379/<db>", redis)
	}
	if img := str(services[m[1]], "image"); !strings.HasPrefix(img, "redis:7") {
		t.Errorf("compose: Redis service %q has image %q, want redis:7", m[1], img)
	}
	checkComposeRedisPersistence(t, c, m[1])
	for _, want := range []string{"prometheus", "grafana"} {
		if services[want] == nil {
			t.Errorf("compose: no %s service", want)
		}
	}

	// Prometheus scrapes both nodes' admin port.
	prom := yamlDoc(t, "prometheus/prometheus.yml")
	var targets []string
	for _, sc := range list(prom, "scrape_configs") {
		if str(sc, "job_name") == "gateway" {
			for _, s := range list(sc, "static_configs") {
				for _, tg := range list(s, "targets") {
					targets = append(targets, fmt.Sprint(tg))
				}
			}
		}
	}
	for _, name := range gateways {
		if !slices.Contains(targets, fmt.Sprintf("%s:%d", name, adminPort)) {
			t.Errorf("prometheus.yml: job gateway does not scrape %s:%d (targets %v)", name, adminPort, targets)
		}
	}

	// Volumes mount what the configs expect.
	mounts := func(svc string) []string {
		var out []string
		for _, v := range list(services[svc], "volumes") {
			out = append(out, fmt.Sprint(v))
		}
		return out
	}
	if pm := mounts("prometheus"); !slices.ContainsFunc(pm, func(s string) bool { return strings.HasPrefix(s, "./prometheus:/etc/prometheus") }) {
		t.Errorf("compose prometheus: ./prometheus (config and alert rules) must be mounted at /etc/prometheus, got %v", pm)
	}
	dashPath := str(yamlDoc(t, "grafana/provisioning/dashboards/gateway.yaml"), "providers", 0, "options", "path")
	gm := mounts("grafana")
	for _, want := range []string{"./grafana/provisioning:/etc/grafana/provisioning", "./grafana/dashboards:" + dashPath} {
		if !slices.ContainsFunc(gm, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("compose grafana: want a volume %s, got %v", want, gm)
		}
	}
	ds := yamlDoc(t, "grafana/provisioning/datasources/prometheus.yaml")
	if u := str(ds, "datasources", 0, "url"); u != "http://prometheus:9090" {
		t.Errorf("grafana datasource url %q, want http://prometheus:9090 (the compose service)", u)
	}
}

// ---------------------------------------------------------------- Prometheus

func TestPrometheusRules(t *testing.T) {
	prom := yamlDoc(t, "prometheus/prometheus.yml")
	var rules []string
	for _, r := range list(prom, "rule_files") {
		rules = append(rules, fmt.Sprint(r))
	}
	if !slices.Contains(rules, "alerts.yml") {
		t.Errorf("prometheus.yml: rule_files %v must load alerts.yml (relative to the config file)", rules)
	}

	doc := yamlDoc(t, "prometheus/alerts.yml")
	var exprs []string
	names := map[string]bool{}
	for _, g := range list(doc, "groups") {
		for _, r := range list(g, "rules") {
			name := str(r, "alert")
			if name == "" {
				t.Errorf("alerts.yml group %s: a rule without alert:", str(g, "name"))
				continue
			}
			names[name] = true
			expr := str(r, "expr")
			exprs = append(exprs, expr)
			if expr == "" {
				t.Errorf("alert %s: no expr", name)
			}
			if f := str(r, "for"); f == "" {
				t.Errorf("alert %s: no for: duration", name)
			}
			if str(r, "labels", "severity") == "" {
				t.Errorf("alert %s: no severity label", name)
			}
			if str(r, "annotations", "summary") == "" || str(r, "annotations", "description") == "" {
				t.Errorf("alert %s: summary and description annotations required", name)
			}
		}
	}
	for _, want := range []string{"GatewayDown", "GatewayNotReady", "GatewayHandshakeFailuresHigh",
		"GatewaySlowConsumerDisconnects", "GatewayBrokerRefusals", "GatewayAuthFailuresSpike",
		"GatewayWebhookErrors", "GatewayHighMemoryPerConnection", "GatewayEventLoopsStalled", "RedisDown",
		"GatewayRedisDataLost", "GatewayRedisUnreachable", "GatewayAcceptPaused", "GatewayRedisReconnects"} {
		if !names[want] {
			t.Errorf("alerts.yml: no alert %s", want)
		}
	}
	checkMetrics(t, "alerts.yml", exprs)
}

// promtool finds promtool, installing Debian's prometheus package (which
// provides /usr/bin/promtool) where that is harmless: as root with apt-get,
// under CI=true or on a machine without systemd (a container or a sandbox,
// where the package's Prometheus service is not started). Elsewhere, or when
// the install fails, the promtool tests skip loudly (and CI=true says so).
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	_, systemd := os.Stat("/run/systemd/system")
	if os.Getenv("CI") != "true" && systemd == nil {
		t.Skip("SKIP: promtool not on PATH: prometheus.yml and alerts.yml only checked structurally, the alert rules not unit-tested (install it: apt-get install prometheus, or the release tarball)")
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("SKIP: promtool not on PATH and cannot install it (needs root and apt-get): prometheus.yml and alerts.yml NOT checked by promtool")
	}
	t.Log("promtool missing, installing Debian's prometheus package (provides /usr/bin/promtool)")
	install := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, apt, "install", "-y", "--no-install-recommends", "prometheus")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if out, err := install(); err != nil {
		t.Logf("apt-get install failed (%v), running apt-get update first:\n%s", err, tail(out))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, apt, "update").CombinedOutput(); err != nil {
			t.Skipf("SKIP: apt-get update failed: %v\n%s", err, tail(out))
		}
		if out, err := install(); err != nil {
			t.Skipf("SKIP: apt-get install prometheus failed: %v\n%s", err, tail(out))
		}
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("SKIP: the prometheus package installed no promtool")
	}
	return p
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		// check config also checks the rule files it loads.
		{"check", "config", "prometheus/prometheus.yml"},
		{"check", "rules", "prometheus/alerts.yml"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// ---------------------------------------------------------------- Grafana

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/dashboards/gateway.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos *struct {
				H, W, X, Y int
			} `json:"gridPos"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("gateway.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("gateway.json: uid and title required")
	}
	var exprs, titles []string
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("gateway.json: panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("gateway.json: panel %q has no gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		titles = append(titles, strings.ToLower(p.Title))
		if len(p.Targets) == 0 {
			t.Errorf("gateway.json: panel %q has no target", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("gateway.json: panel %q has an empty expression", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	for _, want := range []string{"connections by protocol", "sessions", "channels", "handshakes/s by result",
		"messages in/s by protocol", "messages out/s by protocol", "disconnects/s by code", "slow consumer",
		"broadcast loop tasks", "broker refusals", "redis", "webhook results", "kosync key cache hit ratio",
		"handshake duration p99", "resident memory", "cpu", "go heap", "goroutines"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("gateway.json: no panel about %q", want)
		}
	}
	checkMetrics(t, "gateway.json", exprs)
}

// ---------------------------------------------------------------- systemd

// ini parses a unit file: section -> key -> values (keys may repeat).
func ini(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			if out[sec] != nil {
				t.Errorf("%s:%d: section [%s] twice", path, n, sec)
			}
			out[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" || strings.HasSuffix(line, "\\") {
				t.Errorf("%s:%d: not a key=value line in a section: %q", path, n, line)
				continue
			}
			k = strings.TrimSpace(k)
			out[sec][k] = append(out[sec][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readEnvFile reads KEY=VALUE lines (comments skipped).
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: not KEY=VALUE: %q", path, line)
			continue
		}
		env[k] = v
	}
	return env
}

func TestSystemdUnit(t *testing.T) {
	u := ini(t, "systemd/gateway.service")
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("gateway.service: no [%s] section", s)
		}
	}
	svc := u["Service"]
	one := func(k string) string {
		v := svc[k]
		if len(v) == 0 {
			return "<unset>"
		}
		return v[len(v)-1]
	}
	for k, want := range map[string]string{
		"Type": "simple", "User": "gateway", "EnvironmentFile": "/etc/gateway/env",
		"StateDirectory": "gateway", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"ProtectHome": "yes", "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/gateway",
		"CapabilityBoundingSet": "", "AmbientCapabilities": "", "LimitNOFILE": "1048576",
		"KillSignal": "SIGTERM", "Restart": "on-failure",
	} {
		if got := one(k); got != want {
			t.Errorf("gateway.service: %s=%q, want %q", k, got, want)
		}
	}
	if exe := one("ExecStart"); !strings.HasPrefix(exe, "/usr/local/bin/gateway serve") || !strings.Contains(exe, "--data-dir /var/lib/gateway") {
		t.Errorf("gateway.service: ExecStart=%q", exe)
	}
	if len(u["Install"]["WantedBy"]) == 0 {
		t.Errorf("gateway.service: [Install] needs WantedBy=")
	}
	stop := mustDuration(t, "gateway.service TimeoutStopSec", one("TimeoutStopSec"))
	env := readEnvFile(t, "systemd/gateway.env.example")
	if env["GATEWAY_SECRET"] == "" {
		t.Errorf("gateway.env.example: GATEWAY_SECRET must be there (a placeholder)")
	}
	checkStop(t, "systemd",
		mustDuration(t, "gateway.env.example GATEWAY_DRAIN_WINDOW", env["GATEWAY_DRAIN_WINDOW"]),
		mustDuration(t, "gateway.env.example GATEWAY_SHUTDOWN_TIMEOUT", env["GATEWAY_SHUTDOWN_TIMEOUT"]), stop)

	// systemd-analyze verify fails in a sandbox without the binary and the
	// user; its output is only informative.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, sa, "verify", "systemd/gateway.service").CombinedOutput()
		t.Logf("systemd-analyze verify (informative only): err=%v %s", err, bytes.TrimSpace(out))
	}
}

// ---------------------------------------------------------------- Dockerfile

// dockerInstructions joins continuation lines and drops comments.
func dockerInstructions(t *testing.T, path string) [][2]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	cur := ""
	for _, line := range strings.Split(string(data), "\n") {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "#") {
			continue
		}
		if strings.HasSuffix(trim, "\\") {
			cur += strings.TrimSuffix(trim, "\\") + " "
			continue
		}
		cur += trim
		if cur = strings.TrimSpace(cur); cur != "" {
			ins, arg, _ := strings.Cut(cur, " ")
			out = append(out, [2]string{strings.ToUpper(ins), strings.TrimSpace(arg)})
		}
		cur = ""
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := dockerInstructions(t, "Dockerfile")
	var froms []int
	for i, in := range ins {
		if in[0] == "FROM" {
			froms = append(froms, i)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("Dockerfile: %d FROM lines, want 2 (builder and runtime)", len(froms))
	}
	if !strings.HasPrefix(ins[froms[0]][1], "golang:") {
		t.Errorf("Dockerfile: builder %q is not golang:", ins[froms[0]][1])
	}
	if final := ins[froms[1]][1]; !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("Dockerfile: runtime image %q, want distroless/static or scratch", final)
	}
	seen := map[string]string{}
	build := ""
	for i, in := range ins {
		if i > froms[1] {
			seen[in[0]] = in[1]
		}
		if in[0] == "RUN" && strings.Contains(in[1], "go build") {
			build = in[1]
		}
	}
	if u := seen["USER"]; u == "" || strings.HasPrefix(u, "0") || strings.HasPrefix(u, "root") {
		t.Errorf("Dockerfile: runtime USER %q, want a non-root user (65532)", u)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "github.com/wsgateway/gateway/gateway.Version=", "./cmd/gateway"} {
		if !strings.Contains(build, want) {
			t.Errorf("Dockerfile: the go build command lacks %q: %q", want, build)
		}
	}
	if f := strings.Fields(seen["EXPOSE"]); !slices.Equal(f, []string{"8080", "3000", "8081"}) {
		t.Errorf("Dockerfile: EXPOSE %v, want 8080 3000 8081", f)
	}
	if seen["VOLUME"] != "/var/lib/gateway" {
		t.Errorf("Dockerfile: VOLUME %q", seen["VOLUME"])
	}
	var entry, cmd []string
	if err := json.Unmarshal([]byte(seen["ENTRYPOINT"]), &entry); err != nil || !slices.Equal(entry, []string{"/gateway"}) {
		t.Errorf("Dockerfile: ENTRYPOINT %q, want [\"/gateway\"] (exec form)", seen["ENTRYPOINT"])
	}
	if err := json.Unmarshal([]byte(seen["CMD"]), &cmd); err != nil ||
		!slices.Equal(cmd, []string{"serve", "--admin-listen", "0.0.0.0:8081", "--data-dir", "/var/lib/gateway"}) {
		t.Errorf("Dockerfile: CMD %q", seen["CMD"])
	}
	if _, ok := seen["HEALTHCHECK"]; ok {
		t.Errorf("Dockerfile: a HEALTHCHECK cannot run on distroless (no shell, no client)")
	}
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\.git$`).Match(ignore) {
		t.Errorf("Dockerfile.dockerignore must exclude .git")
	}
}

// ---------------------------------------------------------------- TLS proxies

func TestTLSProxies(t *testing.T) {
	nginx, err := os.ReadFile("nginx/gateway.conf")
	if err != nil {
		t.Fatal(err)
	}
	n := string(nginx)
	for _, want := range []string{"listen 443 ssl", "server 127.0.0.1:8080", "server 127.0.0.1:3000",
		"proxy_http_version 1.1", "proxy_set_header Upgrade", "proxy_set_header Connection",
		"X-Forwarded-Proto $scheme", "proxy_buffering         off", "--trusted-proxies 127.0.0.1", "--public-url https://"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx/gateway.conf lacks %q", want)
		}
	}
	timeouts := regexp.MustCompile(`(?m)^\s*proxy_read_timeout\s+(\d+)s;`).FindAllStringSubmatch(n, -1)
	for _, m := range timeouts {
		if s, _ := strconv.Atoi(m[1]); s <= 60 {
			t.Errorf("nginx: proxy_read_timeout %ss must exceed 60 s", m[1])
		}
	}
	if len(timeouts) != 2 {
		t.Errorf("nginx: both server blocks need a proxy_read_timeout")
	}
	if strings.Count(n, "{") != strings.Count(n, "}") {
		t.Errorf("nginx/gateway.conf: unbalanced braces")
	}

	caddy, err := os.ReadFile("caddy/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	c := string(caddy)
	for _, want := range []string{"reverse_proxy 127.0.0.1:8080", "reverse_proxy 127.0.0.1:3000", "flush_interval -1",
		"--trusted-proxies 127.0.0.1", "--public-url https://"} {
		if !strings.Contains(c, want) {
			t.Errorf("caddy/Caddyfile lacks %q", want)
		}
	}
	if strings.Count(c, "{") != strings.Count(c, "}") {
		t.Errorf("caddy/Caddyfile: unbalanced braces")
	}
}

// ---------------------------------------------------------------- README

func TestReadmeCoversEveryFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") || path == "README.md" {
			return err
		}
		if !bytes.Contains(readme, []byte(filepath.ToSlash(path))) {
			t.Errorf("deploy/README.md does not mention %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
