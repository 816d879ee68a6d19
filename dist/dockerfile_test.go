package dist

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
)

// binaryInImage is where the Dockerfile's build stage writes the binary.
const binaryInImage = "/out/chihaya"

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// stage is one FROM and what follows it up to the next.
type stage struct {
	base, name string
	instrs     []instruction
}

type dockerfile struct {
	args   map[string]string // ARGs before the first FROM, with their defaults
	stages []stage
}

// parseDockerfile reads the instructions of a Dockerfile: comments and blank lines dropped,
// lines ending in a backslash joined with the next.
func parseDockerfile(path string) (*dockerfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	df := &dockerfile{args: map[string]string{}}
	var (
		pending   strings.Builder
		startLine int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (text == "" || strings.HasPrefix(text, "#")) {
			continue
		}
		if pending.Len() == 0 {
			startLine = n
		}
		if cont, ok := strings.CutSuffix(text, "\\"); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(text)
		cmd, args, _ := strings.Cut(pending.String(), " ")
		pending.Reset()
		in := instruction{line: startLine, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			st := stage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			} else if len(f) != 1 {
				return nil, fmt.Errorf("%s:%d: FROM %s: want IMAGE [AS NAME]", path, in.line, in.args)
			}
			df.stages = append(df.stages, st)
		case len(df.stages) == 0:
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("%s:%d: %s before the first FROM", path, in.line, in.cmd)
			}
			k, v, _ := strings.Cut(in.args, "=")
			df.args[k] = v
		default:
			st := &df.stages[len(df.stages)-1]
			st.instrs = append(st.instrs, in)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if pending.Len() != 0 {
		return nil, fmt.Errorf("%s: ends in a continued line", path)
	}
	return df, nil
}

// expand replaces ${NAME} and $NAME with the ARG defaults declared before the first FROM.
func (df *dockerfile) expand(s string) string {
	return os.Expand(s, func(k string) string { return df.args[k] })
}

// buildCommand returns the RUN of a stage before the last that writes binaryInImage.
func (df *dockerfile) buildCommand() (string, error) {
	for _, st := range df.stages[:max(len(df.stages)-1, 0)] {
		for _, in := range st.instrs {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") && strings.Contains(in.args, "-o "+binaryInImage) {
				return in.args, nil
			}
		}
	}
	return "", errors.New("dist/Dockerfile: no RUN in a build stage that runs go build -o " + binaryInImage)
}

// all returns the instructions of st named cmd.
func (st stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range st.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm decodes an instruction's JSON array form (ENTRYPOINT ["a", "b"]).
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	require.NoError(t, json.Unmarshal([]byte(in.args), &v), "line %d: %s must be in exec form (a JSON array), so that the tracker is PID 1 and gets SIGTERM", in.line, in.cmd)
	return v
}

// TestDockerfile checks the container build's structure against the repository: a build stage
// that makes a static binary (CGO_ENABLED=0) with the Go version go.mod asks for, and a final
// stage on a minimal base that copies that binary and an example configuration that exists,
// runs as a non-root user, starts the tracker in exec form on that configuration, and exposes
// the ports the configuration listens on.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	df, err := parseDockerfile(filepath.Join(root, "dist", "Dockerfile"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(df.stages), 2, "multi-stage: a build stage and a runtime stage")
	build, final := df.stages[0], df.stages[len(df.stages)-1]

	t.Run("build stage", func(t *testing.T) {
		require.NotEmpty(t, build.name, "the build stage is named, for COPY --from")
		base := df.expand(build.base)
		require.True(t, strings.HasPrefix(base, "golang:"), "the build stage is a golang image, got %s", base)
		gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
		require.NoError(t, err)
		want := regexp.MustCompile(`(?m)^go (\d+\.\d+(?:\.\d+)?)$`).FindSubmatch(gomod)
		require.NotNil(t, want, "go.mod has a go line")
		tag := strings.TrimPrefix(base, "golang:")
		assert.False(t, versionLess(tag, string(want[1])), "the build image's Go (%s) is older than go.mod's go %s", tag, want[1])

		run, err := df.buildCommand()
		require.NoError(t, err)
		assert.Regexp(t, `(^|\s)CGO_ENABLED=0\s+go build\b`, run, "a static binary: CGO_ENABLED=0 on go build")
		assert.Contains(t, run, "./cmd/chihaya")
		assert.Contains(t, run, binaryInImage+" -version", "the build checks that the binary runs")
	})

	t.Run("runtime stage", func(t *testing.T) {
		base := df.expand(final.base)
		minimal := base == "scratch" || regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?(:[\w.-]+)?$`).MatchString(base)
		assert.True(t, minimal, "a minimal base (scratch or distroless/static), got %s", base)

		users := final.all("USER")
		require.NotEmpty(t, users, "the runtime stage sets USER")
		user := users[len(users)-1].args
		uid, _, _ := strings.Cut(user, ":")
		assert.NotContains(t, []string{"root", "0", ""}, uid, "USER %s: not root", user)
		if n, err := strconv.Atoi(uid); err == nil {
			assert.Positive(t, n, "USER %s: a non-zero UID", user)
		}
		assert.Empty(t, final.all("RUN"), "the runtime base has no shell: nothing to RUN")

		var binDest, cfgSrc, cfgDest string
		for _, in := range final.all("COPY") {
			f := strings.Fields(in.args)
			require.Len(t, f, 3-boolInt(!strings.HasPrefix(in.args, "--from=")), "line %d: COPY [--from=STAGE] SRC DEST", in.line)
			if from, ok := strings.CutPrefix(f[0], "--from="); ok {
				assert.Equal(t, build.name, from, "line %d: the binary comes from the build stage", in.line)
				assert.Equal(t, binaryInImage, f[1], "line %d: the build stage's output", in.line)
				binDest = f[2]
				continue
			}
			cfgSrc, cfgDest = f[0], f[1]
		}
		require.NotEmpty(t, binDest, "the runtime stage copies the binary from the build stage")
		require.NotEmpty(t, cfgSrc, "the runtime stage copies a configuration")
		cfg, err := config.Load(filepath.Join(root, filepath.FromSlash(cfgSrc)))
		require.NoError(t, err, "the configuration the image carries")

		ep := final.all("ENTRYPOINT")
		require.Len(t, ep, 1)
		assert.Equal(t, []string{binDest}, execForm(t, ep[0]), "ENTRYPOINT runs the copied binary")
		cmd := final.all("CMD")
		require.Len(t, cmd, 1)
		assert.Equal(t, []string{"-config", cfgDest}, execForm(t, cmd[0]), "CMD points -config at the copied configuration")

		var exposed []string
		for _, in := range final.all("EXPOSE") {
			exposed = append(exposed, strings.Fields(in.args)...)
		}
		for _, want := range []struct{ addr, proto string }{
			{cfg.Addr, "tcp"}, {cfg.UDPAddr, "udp"}, {cfg.StatsAddr, "tcp"},
		} {
			if want.addr == "" {
				continue
			}
			_, port, err := splitPort(want.addr)
			require.NoError(t, err)
			assert.Contains(t, exposed, port+"/"+want.proto, "EXPOSE the configuration's %s", want.addr)
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// splitPort splits "host:port" (host may be empty).
func splitPort(addr string) (host, port string, err error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", fmt.Errorf("%q: no port", addr)
	}
	return addr[:i], addr[i+1:], nil
}

// versionLess reports whether Go version a (such as "1.26.8-bookworm" or "1.26") is older than
// b ("1.26.8"), comparing the dotted numbers a starts with.
func versionLess(a, b string) bool {
	nums := func(s string) []int {
		s = regexp.MustCompile(`^\d+(\.\d+)*`).FindString(s)
		var out []int
		for _, p := range strings.Split(s, ".") {
			n, _ := strconv.Atoi(p)
			out = append(out, n)
		}
		return out
	}
	x, y := nums(a), nums(b)
	for i := range max(len(x), len(y)) {
		var xi, yi int
		if i < len(x) {
			xi = x[i]
		}
		if i < len(y) {
			yi = y[i]
		}
		if xi != yi {
			return xi < yi
		}
	}
	return false
}

// TestDockerfileBuildCommand runs the build stage's command on this machine (in the
// repository's root, writing to a temporary directory instead of /out) and checks what it
// makes: a static ELF binary whose -version names what `go version -m` reads from it.
func TestDockerfileBuildCommand(t *testing.T) {
	bin := staticBinary(t)
	static, err := isStatic(bin)
	require.NoError(t, err)
	assert.True(t, static, "%s asks for a dynamic loader or shared libraries: it would not run on a base without libc", bin)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	meta, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	require.NoError(t, err, "go version -m")
	info := parseGoVersionM(t, string(meta))
	assert.Equal(t, "0", info.settings["CGO_ENABLED"])
	assert.Equal(t, "true", info.settings["-trimpath"])

	out, err := exec.CommandContext(ctx, bin, "-version").Output()
	require.NoError(t, err, "chihaya -version exits 0 by itself")
	line, ok := strings.CutSuffix(string(out), "\n")
	require.True(t, ok, "a line: %q", out)
	assert.NotContains(t, line, "\n", "one line")
	t.Logf("chihaya -version: %s", line)
	assert.True(t, strings.HasPrefix(line, "chihaya "+info.version+","), "the module version %q first in %q", info.version, line)
	assert.Contains(t, line, "built with "+info.goVersion+" for "+info.settings["GOOS"]+"/"+info.settings["GOARCH"])
	if rev := info.settings["vcs.revision"]; rev != "" {
		want := "revision " + rev
		if info.settings["vcs.modified"] == "true" {
			want += "+modified"
		}
		assert.Contains(t, line, want+", committed "+info.settings["vcs.time"]+",")
	} else {
		// A checkout Go cannot stamp (no .git directory, as in a git worktree).
		assert.Contains(t, line, "revision unknown, committed unknown")
	}
}

type goVersionM struct {
	goVersion, version string
	settings           map[string]string
}

// parseGoVersionM reads `go version -m BIN`: "BIN: goX", then tab-separated lines such as
// "mod PATH VERSION SUM" and "build KEY=VALUE".
func parseGoVersionM(t *testing.T, text string) goVersionM {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	require.NotEmpty(t, lines)
	_, gv, ok := strings.Cut(lines[0], ": ")
	require.True(t, ok, "first line of go version -m: %q", lines[0])
	info := goVersionM{goVersion: strings.TrimSpace(gv), settings: map[string]string{}}
	for _, l := range lines[1:] {
		f := strings.Split(strings.TrimSpace(l), "\t")
		switch {
		case len(f) >= 3 && f[0] == "mod":
			info.version = f[2]
		case len(f) == 2 && f[0] == "build":
			if k, v, ok := strings.Cut(f[1], "="); ok {
				info.settings[k] = v
			}
		}
	}
	require.NotEmpty(t, info.version, "no mod line in go version -m:\n%s", text)
	return info
}

// TestDockerfileImageBuild builds the image with a container builder, when this machine has
// one (buildah, podman, or docker with a running engine) and the base images are already in its
// local storage: the build never pulls, since CI's machine reaches no container registry. The
// image's binary must then answer -version.
func TestDockerfileImageBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	root := repoRoot(t)
	df, err := parseDockerfile(filepath.Join(root, "dist", "Dockerfile"))
	require.NoError(t, err)
	tool, why := containerBuilder()
	if tool == "" {
		t.Skip("no container builder: " + why + "; to run this test, install one (apt-get install buildah) and load the base images " + strings.Join(bases(df), " and ") + " into its storage")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var missing []string
	for _, b := range bases(df) {
		if b == "scratch" {
			continue
		}
		if err := exec.CommandContext(ctx, tool, "image", "inspect", b).Run(); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		t.Skipf("%s has no local copy of %s, and this machine reaches no container registry to pull it (`%s pull` it where one is reachable)", tool, strings.Join(missing, ", "), tool)
	}
	tag := fmt.Sprintf("localhost/chihaya-dist-test:%d", time.Now().UnixNano())
	args := []string{"build", "-f", filepath.Join("dist", "Dockerfile"), "-t", tag}
	if tool != "docker" {
		args = append(args, "--pull=never")
	}
	build := exec.CommandContext(ctx, tool, append(args, ".")...)
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s build:\n%s", tool, out)
	t.Cleanup(func() { _ = exec.Command(tool, "rmi", "-f", tag).Run() })
	out, err = exec.CommandContext(ctx, tool, "run", "--rm", "--network=none", tag, "-version").Output()
	require.NoError(t, err, "%s run %s -version", tool, tag)
	assert.True(t, strings.HasPrefix(string(out), "chihaya "), "-version in the image: %q", out)
}

// bases lists the images the Dockerfile's stages start from (not the stages themselves).
func bases(df *dockerfile) []string {
	names := map[string]bool{}
	var out []string
	for _, st := range df.stages {
		b := df.expand(st.base)
		if !names[b] {
			out = append(out, b)
		}
		names[st.name] = true
	}
	return out
}

// containerBuilder returns the first usable container builder, or "" and why there is none.
func containerBuilder() (tool, why string) {
	for _, name := range []string{"buildah", "podman"} {
		if _, err := exec.LookPath(name); err == nil {
			return name, ""
		}
	}
	if _, err := exec.LookPath("docker"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := exec.CommandContext(ctx, "docker", "info").Run(); err != nil {
			return "", "buildah and podman are not installed, and docker is only a client here (no engine answers)"
		}
		return "docker", ""
	}
	return "", "buildah, podman and docker are not installed"
}
