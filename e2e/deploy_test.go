package e2e

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/breakwater/breakwater/config"
)

// The files under deploy/ are tested here so that they cannot rot: the NATS
// configs go through the server's own parser, the Kubernetes manifests
// through a YAML decoder, the worker config through the worker's loader, and
// every worker flag they use must exist.

func deployPath(parts ...string) string {
	return filepath.Join(append([]string{modRoot, "deploy"}, parts...)...)
}

// TestDeployNATSConfigs parses every nats-server config under deploy/nats.
func TestDeployNATSConfigs(t *testing.T) {
	t.Parallel()
	var files []string
	err := filepath.WalkDir(deployPath("nats"), func(path string, d os.DirEntry, err error) error {
		// auth.conf is a block for the others to include, not a server config.
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".conf") && d.Name() != "auth.conf" {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d .conf files under deploy/nats, want single.conf and three cluster nodes: %v", len(files), files)
	}

	cluster := map[string]*server.Options{}
	for _, f := range files {
		rel, _ := filepath.Rel(deployPath(), f)
		opts, err := server.ProcessConfigFile(f)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		switch {
		case !opts.JetStream:
			t.Errorf("%s: JetStream is not enabled", rel)
		case !opts.SyncAlways:
			t.Errorf("%s: jetstream.sync_interval is not always", rel)
		case opts.StoreDir == "":
			t.Errorf("%s: jetstream.store_dir is not set", rel)
		case opts.HTTPPort == 0:
			t.Errorf("%s: no monitoring port (http)", rel)
		case opts.ServerName == "":
			t.Errorf("%s: no server_name", rel)
		}
		if filepath.Base(filepath.Dir(f)) == "cluster" {
			cluster[rel] = opts
		}
	}

	if len(cluster) != 3 {
		t.Fatalf("deploy/nats/cluster has %d node configs, want 3", len(cluster))
	}
	names, stores, clusterNames := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var routePorts []string
	for rel, o := range cluster {
		names[o.ServerName] = true
		stores[o.StoreDir] = true
		clusterNames[o.Cluster.Name] = true
		if o.Cluster.Port == 0 {
			t.Errorf("%s: no cluster port", rel)
		}
		if len(o.Routes) != 3 {
			t.Errorf("%s: %d routes, want the 3 nodes", rel, len(o.Routes))
		}
		routePorts = append(routePorts, strconv.Itoa(o.Cluster.Port))
	}
	if len(names) != 3 || len(stores) != 3 {
		t.Errorf("cluster nodes share names or stores: names %v, stores %v", names, stores)
	}
	if len(clusterNames) != 1 {
		t.Errorf("cluster nodes disagree on the cluster name: %v", clusterNames)
	}
	for rel, o := range cluster {
		var ports []string
		for _, r := range o.Routes {
			ports = append(ports, r.Port())
		}
		for _, p := range routePorts {
			if !slices.Contains(ports, p) {
				t.Errorf("%s: routes %v do not reach cluster port %s", rel, ports, p)
			}
		}
	}
}

// k8sObject is the part of a Kubernetes manifest the tests look at.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Name  string   `yaml:"name"`
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
					ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// decodeAll decodes every YAML document of path into T.
func decodeAll[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []T
	for {
		var doc T
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		docs = append(docs, doc)
	}
}

// TestDeployKubernetes decodes the manifests and checks what ties them to the
// worker: its config loads, the probes hit the --http port, the grace period
// covers the ack wait and every flag exists.
func TestDeployKubernetes(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob(deployPath("kubernetes", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no YAML files in deploy/kubernetes (err %v)", err)
	}
	objects := map[string]k8sObject{} // kind -> object
	for _, p := range paths {
		if filepath.Base(p) == "nats-values.yaml" {
			continue // Helm values, not a manifest
		}
		for _, o := range decodeAll[k8sObject](t, p) {
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", filepath.Base(p))
				continue
			}
			objects[o.Kind] = o
		}
	}

	cm, ok := objects["ConfigMap"]
	if !ok {
		t.Fatal("no ConfigMap with the worker config")
	}
	cfg, err := config.Load(writeFile(t, "worker.yaml", cm.Data["worker.yaml"]))
	if err != nil {
		t.Fatalf("ConfigMap worker.yaml does not load: %v", err)
	}
	if cfg.Streams.Replicas != 3 {
		t.Errorf("ConfigMap worker.yaml: streams.replicas = %d, want 3", cfg.Streams.Replicas)
	}

	dep, ok := objects["Deployment"]
	if !ok {
		t.Fatal("no Deployment")
	}
	if r := dep.Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("Deployment replicas = %v, want 3", r)
	}
	pod := dep.Spec.Template.Spec
	ackWait := cfg.Worker.AckWait.D()
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < ackWait {
		t.Errorf("terminationGracePeriodSeconds = %v, want >= ack_wait %s", g, ackWait)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("Deployment has %d containers, want 1", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	if !slices.Contains(ctr.Args, "--http=:8080") {
		t.Errorf("container args %v lack --http=:8080", ctr.Args)
	}
	portNames := map[string]int{}
	for _, p := range ctr.Ports {
		portNames[p.Name] = p.ContainerPort
	}
	for _, pr := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{{"liveness", ctr.LivenessProbe, "/healthz"}, {"readiness", ctr.ReadinessProbe, "/readyz"}} {
		if pr.probe == nil {
			t.Errorf("no %s probe", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s probe path %q, want %q", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		port := pr.probe.HTTPGet.Port.Value
		if n, ok := portNames[port]; ok {
			port = strconv.Itoa(n)
		}
		if port != "8080" {
			t.Errorf("%s probe port %q, want 8080 (the --http port)", pr.name, pr.probe.HTTPGet.Port.Value)
		}
	}
	wantWorkerFlags(t, "Deployment args", ctr.Args)

	var values struct {
		Config struct {
			Jetstream struct {
				Enabled   bool `yaml:"enabled"`
				FileStore struct {
					Enabled bool `yaml:"enabled"`
				} `yaml:"fileStore"`
				Merge map[string]any `yaml:"merge"`
			} `yaml:"jetstream"`
		} `yaml:"config"`
	}
	docs := decodeAll[map[string]any](t, deployPath("kubernetes", "nats-values.yaml"))
	if len(docs) != 1 {
		t.Fatalf("nats-values.yaml has %d documents, want 1", len(docs))
	}
	b, _ := yaml.Marshal(docs[0])
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	js := values.Config.Jetstream
	if !js.Enabled || !js.FileStore.Enabled || js.Merge["sync_interval"] != "always" {
		t.Errorf("nats-values.yaml: jetstream enabled %v, fileStore %v, merge %v; want file storage with sync_interval: always",
			js.Enabled, js.FileStore.Enabled, js.Merge)
	}
}

// TestDeploySystemd checks the unit's stop and restart settings and that
// its command line uses only flags the worker has.
func TestDeploySystemd(t *testing.T) {
	t.Parallel()
	f, err := os.Open(deployPath("systemd", "breakwater-worker.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	var cont strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		line = cont.String() + line
		cont.Reset()
		if k, v, ok := strings.Cut(line, "="); ok {
			keys[k] = append(keys[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Restart": "always", "KillSignal": "SIGTERM", "NoNewPrivileges": "yes", "ProtectSystem": "strict"}
	for k, v := range want {
		if got := keys[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %v, want %s", k, got, v)
		}
	}
	stop, err := time.ParseDuration(strings.Join(keys["TimeoutStopSec"], ""))
	if err != nil || stop < 30*time.Second {
		t.Errorf("TimeoutStopSec = %v, want a duration >= the default ack_wait 30s", keys["TimeoutStopSec"])
	}
	if len(keys["ExecStart"]) != 1 {
		t.Fatalf("ExecStart = %v, want one", keys["ExecStart"])
	}
	wantWorkerFlags(t, "ExecStart", strings.Fields(keys["ExecStart"][0]))
}

// wantWorkerFlags checks that every --flag in args is one the worker
// documents in its --help.
func wantWorkerFlags(t *testing.T, where string, args []string) {
	t.Helper()
	r := runWorker(t, nil, "--help")
	if r.code != 0 {
		t.Fatalf("worker --help: exit %d", r.code)
	}
	help := r.stdout + r.stderr
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(a, "=")
		if !strings.Contains(help, name+" ") && !strings.Contains(help, name+"[") && !strings.Contains(help, name+"\n") {
			t.Errorf("%s uses %s, which worker --help does not list", where, name)
		}
	}
	if t.Failed() {
		t.Logf("worker --help:\n%s", help)
	}
}
