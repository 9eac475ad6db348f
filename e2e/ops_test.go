package e2e

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// The operations files (Dockerfile, KEDA, dashboard, alerts) are tested here
// against the code: what the image would hold, which stream, consumer and
// account the scaler watches, which metrics the panels and rules query.

// dockerInstr is one instruction of a Dockerfile, continuation lines joined.
type dockerInstr struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// parseDockerfile reads the instructions of path, without comments.
func parseDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerInstr
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// dockerStage is one FROM ... AS name section of a Dockerfile.
type dockerStage struct {
	name, base string
	instrs     []dockerInstr
}

func dockerStages(instrs []dockerInstr) []dockerStage {
	var stages []dockerStage
	for _, in := range instrs {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := dockerStage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	return stages
}

// TestDockerfile checks what the Dockerfile claims: a build stage and a
// distroless or scratch run stage, a non-root user, the worker as entry
// point, and binaries built the way the Dockerfile builds them that are
// static (no ELF interpreter, no shared library): they run on an image
// without libc. Docker does not run in CI, so the image itself is not built.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := dockerStages(parseDockerfile(t, filepath.Join(modRoot, "Dockerfile")))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build and a run stage", len(stages))
	}
	build, run := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(run.base, "gcr.io/distroless/static") && run.base != "scratch" {
		t.Errorf("run stage FROM %s, want gcr.io/distroless/static or scratch", run.base)
	}

	var user, entry string
	var copied []string
	for _, in := range run.instrs {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
				t.Errorf("ENTRYPOINT %s: want the exec form [\"...\"]: %v", in.args, err)
				continue
			}
			entry = argv[0]
		case "COPY":
			if strings.Contains(in.args, "--from="+build.name) {
				copied = append(copied, strings.Fields(in.args)...)
			}
		case "RUN":
			t.Errorf("run stage has RUN %s: a distroless or scratch image has no shell", in.args)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); user == "" || (err == nil && n == 0) || uid == "root" {
		t.Errorf("run stage USER %q, want a non-root user", user)
	}
	if filepath.Base(entry) != "worker" {
		t.Errorf("ENTRYPOINT runs %q, want the worker", entry)
	}

	// The build stage's go build, run here with its ENV (CGO_ENABLED=0) and
	// flags into a temporary directory.
	env := []string{}
	var goBuild []string
	for _, in := range build.instrs {
		switch in.cmd {
		case "ENV":
			env = append(env, strings.Fields(in.args)...)
		case "RUN":
			if f := shellFields(in.args); len(f) > 2 && f[0] == "go" && f[1] == "build" {
				goBuild = f
			}
		}
	}
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("build stage ENV %v lacks CGO_ENABLED=0", env)
	}
	if goBuild == nil {
		t.Fatal("build stage has no RUN go build")
	}
	out := t.TempDir()
	var pkgs []string
	args := []string{"build"}
	for i := 2; i < len(goBuild); i++ {
		a := goBuild[i]
		switch {
		case a == "-o":
			i++ // replaced by out below
		case strings.HasPrefix(a, "./"):
			pkgs = append(pkgs, a)
		default:
			args = append(args, a)
		}
	}
	args = append(append(args, "-o", out+string(filepath.Separator)), pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = modRoot
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	for _, p := range pkgs {
		name := filepath.Base(p)
		if !slices.Contains(copied, "/out/"+name) {
			t.Errorf("run stage does not COPY /out/%s from the build stage (COPY %v)", name, copied)
		}
		wantStatic(t, filepath.Join(out, name))
	}
	if !slices.Contains(pkgs, "./cmd/worker") {
		t.Errorf("go build builds %v, want ./cmd/worker among them", pkgs)
	}
}

// shellFields splits s into words as a shell would for the simple
// commands of a Dockerfile: on spaces, except inside double quotes, which
// are removed.
func shellFields(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
			}
			inWord = false
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// wantStatic fails unless the ELF file at path needs no dynamic loader.
func wantStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter (PT_INTERP): not static", filepath.Base(path))
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (err %v): not static", filepath.Base(path), libs, err)
	}
}

// TestDockerignore checks that the build context keeps every file the
// binaries are built from: no Go or embedded file of a package they
// depend on lies under an ignored path.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(modRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(l, "/"))
		}
	}
	for _, must := range []string{"go.mod", "go.sum"} {
		if ignored(patterns, must) {
			t.Errorf(".dockerignore excludes %s, which the build needs", must)
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if not .Standard}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}`,
		"./cmd/worker", "./cmd/publisher")
	cmd.Dir = modRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(modRoot, f[0])
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a module from the cache, downloaded in the image
		}
		for _, file := range f[1:] {
			if p := filepath.ToSlash(filepath.Join(rel, file)); ignored(patterns, p) {
				t.Errorf(".dockerignore excludes %s, which the binaries are built from", p)
			}
		}
	}
}

// ignored reports whether path (slash-separated, relative to the context)
// matches a pattern or lies under one, as Docker reads .dockerignore.
func ignored(patterns []string, path string) bool {
	for _, p := range patterns {
		for dir := path; dir != "." && dir != "/"; dir = filepath.Dir(dir) {
			if ok, _ := filepath.Match(p, dir); ok {
				return true
			}
		}
	}
	return false
}

// scaledObject is the part of a KEDA ScaledObject the test looks at.
type scaledObject struct {
	Kind string `yaml:"kind"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount *int `yaml:"minReplicaCount"`
		MaxReplicaCount *int `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

// TestDeployKEDA checks the ScaledObject against what the worker uses: the
// stream and consumer of bus (for the config's prefix), the account the
// worker's user of deploy/nats/auth.conf is in, the Deployment it scales,
// and the PodDisruptionBudget and grace period around it.
func TestDeployKEDA(t *testing.T) {
	t.Parallel()
	var so *scaledObject
	for _, o := range decodeAll[scaledObject](t, deployPath("kubernetes", "worker-scaledobject.yaml")) {
		if o.Kind == "ScaledObject" {
			so = &o
		}
	}
	if so == nil {
		t.Fatal("worker-scaledobject.yaml has no ScaledObject")
	}
	objects := map[string]k8sObject{}
	for _, o := range decodeAll[k8sObject](t, deployPath("kubernetes", "worker-deployment.yaml")) {
		objects[o.Kind] = o
	}
	var cm k8sObject
	for _, o := range decodeAll[k8sObject](t, deployPath("kubernetes", "worker-configmap.yaml")) {
		cm = o
	}
	var cfgPrefix struct {
		Prefix string `yaml:"prefix"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["worker.yaml"]), &cfgPrefix); err != nil {
		t.Fatal(err)
	}
	topo := bus.Topology{Prefix: cfgPrefix.Prefix}

	if got, want := so.Spec.ScaleTargetRef.Name, objects["Deployment"].Metadata.Name; got != want || got == "" {
		t.Errorf("scaleTargetRef.name %q, want the Deployment %q", got, want)
	}
	lo, hi := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount
	if lo == nil || hi == nil || *lo < 2 || *hi < *lo {
		t.Errorf("minReplicaCount %v, maxReplicaCount %v: want 2 <= min <= max (one worker may be evicted at a time)", lo, hi)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
		t.Fatalf("triggers %+v, want one nats-jetstream trigger", so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	for _, c := range []struct{ key, want string }{
		{"stream", topo.TasksStream()},
		{"consumer", bus.DefaultConsumer},
		{"account", workerAccount(t)},
	} {
		if md[c.key] != c.want {
			t.Errorf("trigger %s = %q, want %q (what the worker uses)", c.key, md[c.key], c.want)
		}
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n <= 0 {
		t.Errorf("lagThreshold %q, want a positive integer", md["lagThreshold"])
	}
	// The chart's monitoring port, on the headless service: the scaler
	// asks a cluster's consumer leader at <server>.<endpoint>.
	if ep := md["natsServerMonitoringEndpoint"]; !strings.HasPrefix(ep, "nats-headless.") || !strings.HasSuffix(ep, ":8222") {
		t.Errorf("natsServerMonitoringEndpoint %q, want the nats chart's headless service on port 8222", ep)
	}

	var pdb struct {
		Spec struct {
			MaxUnavailable *int `yaml:"maxUnavailable"`
			MinAvailable   *int `yaml:"minAvailable"`
		} `yaml:"spec"`
	}
	raw := decodeAll[map[string]any](t, deployPath("kubernetes", "worker-deployment.yaml"))
	for _, d := range raw {
		if d["kind"] == "PodDisruptionBudget" {
			b, _ := yaml.Marshal(d)
			if err := yaml.Unmarshal(b, &pdb); err != nil {
				t.Fatal(err)
			}
		}
	}
	switch {
	case pdb.Spec.MaxUnavailable != nil:
		if *pdb.Spec.MaxUnavailable < 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %d blocks every node drain", *pdb.Spec.MaxUnavailable)
		}
	case pdb.Spec.MinAvailable != nil:
		if lo != nil && *pdb.Spec.MinAvailable >= *lo {
			t.Errorf("PodDisruptionBudget minAvailable %d >= minReplicaCount %d blocks node drains at the minimum", *pdb.Spec.MinAvailable, *lo)
		}
	default:
		t.Error("no PodDisruptionBudget in worker-deployment.yaml")
	}

	// The grace period must outlast the drain the worker really does: its
	// log says how long it waits for in-flight tasks.
	drain := drainTimeout(t)
	grace := objects["Deployment"].Spec.Template.Spec.TerminationGracePeriodSeconds
	const settle = 5 * time.Second // hand-backs and connection close after the drain
	if grace == nil || time.Duration(*grace)*time.Second < drain+settle {
		t.Errorf("terminationGracePeriodSeconds %v, want >= the drain timeout %s + %s", grace, drain, settle)
	}
}

// workerAccount is the NATS account of the user breakwater-worker in
// deploy/nats/auth.conf, as the server parses it ($G without accounts).
func workerAccount(t *testing.T) string {
	t.Helper()
	// The include is relative to the including file, as in deploy/nats.
	auth, err := os.ReadFile(deployPath("nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := writeFile(t, "server.conf", "jetstream: enabled\ninclude auth.conf\n")
	if err := os.WriteFile(filepath.Join(filepath.Dir(conf), "auth.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("parse auth.conf: %v", err)
	}
	for _, u := range opts.Users {
		if u.Username == "breakwater-worker" {
			if u.Account != nil {
				return u.Account.Name
			}
			return server.DEFAULT_GLOBAL_ACCOUNT
		}
	}
	t.Fatal("auth.conf has no user breakwater-worker")
	return ""
}

// drainTimeout starts a worker, stops it with SIGTERM and reads from its
// log how long it said it would wait for in-flight tasks.
func drainTimeout(t *testing.T) time.Duration {
	t.Helper()
	s := startNATS(t)
	w := startWorker(t, s)
	w.Signal(syscall.SIGTERM)
	if code := w.Wait(testkit.StopTimeout); code != 0 {
		t.Fatalf("worker exit %d after SIGTERM, want 0", code)
	}
	for _, line := range strings.Split(w.Stderr()+w.Stdout(), "\n") {
		if !strings.Contains(line, "worker draining") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "timeout="); ok {
				d, err := time.ParseDuration(strings.Trim(v, `"`))
				if err != nil {
					t.Fatalf("drain log %q: %v", line, err)
				}
				return d
			}
		}
	}
	t.Fatal("the worker logged no \"worker draining\" line with a timeout")
	return 0
}
