package dist

import (
	"bufio"
	"context"
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

const (
	unitPath = "systemd/chihaya.service"
	// binaryPath and configPath are where the unit expects the binary and its configuration.
	binaryPath = "/usr/local/bin/chihaya"
	configPath = "/etc/chihaya/chihaya.json"
	// maxExposure is the highest `systemd-analyze security` exposure the unit may have (0 is
	// the best, 10 the worst; below 2 systemd calls it "OK").
	maxExposure = 2.0
)

// unit is a systemd unit file: section → key → values in order (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "%s:%d: want KEY=VALUE: %q", path, n, line)
			require.NotEmpty(t, section, "%s:%d: a key outside any section", path, n)
			u[section][k] = append(u[section][k], v)
		}
	}
	require.NoError(t, sc.Err())
	return u
}

// last is the value of a key that systemd reads last-wins.
func (u unit) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestSystemdUnit checks the unit's hardening and its commands: its own user (DynamicUser or
// User), no new privileges, a read-only system, a raised open-file limit, restart on failure,
// SIGHUP for reload, the binary started on /etc/chihaya/chihaya.json, and Type=notify with
// NotifyAccess=all, which a SIGUSR2 upgrade needs.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, unitPath)
	svc := "Service"
	require.Contains(t, u, svc)

	tests := []struct {
		key  string
		want func(v string) bool
		what string
	}{
		{"ExecStart", func(v string) bool { return v == binaryPath+" -config "+configPath }, "runs " + binaryPath + " on " + configPath},
		{"ExecReload", func(v string) bool {
			return regexp.MustCompile(`^\S*/kill -(HUP|SIGHUP|s HUP) \$MAINPID$`).MatchString(v)
		}, "sends SIGHUP to the main process"},
		{"Restart", func(v string) bool { return v == "on-failure" }, "restarts on failure"},
		{"NoNewPrivileges", isYes, "no new privileges"},
		{"ProtectSystem", func(v string) bool { return v == "strict" }, "the whole file system read-only"},
		{"ProtectHome", func(v string) bool { return isYes(v) || v == "read-only" || v == "tmpfs" }, "no home directories"},
		{"PrivateTmp", isYes, "a /tmp of its own"},
		{"PrivateDevices", isYes, "no devices"},
		{"LimitNOFILE", func(v string) bool {
			soft, _, _ := strings.Cut(v, ":")
			n, err := strconv.Atoi(soft)
			return soft == "infinity" || (err == nil && n >= 65536)
		}, "at least 65536 open files"},
		{"KillSignal", func(v string) bool { return v == "" || v == "SIGTERM" }, "SIGTERM stops it gracefully"},
		{"Type", func(v string) bool { return v == "notify" }, "the tracker reports READY=1 and its MAINPID"},
		{"NotifyAccess", func(v string) bool { return v == "all" }, "the process an upgrade (SIGUSR2) starts may become the main process"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			v := u.last(svc, tt.key)
			assert.True(t, tt.want(v), "%s=%q: want %s", tt.key, v, tt.what)
		})
	}
	t.Run("own user", func(t *testing.T) {
		dynamic := isYes(u.last(svc, "DynamicUser"))
		user := u.last(svc, "User")
		assert.True(t, dynamic || (user != "" && user != "root" && user != "0"), "DynamicUser=yes or a dedicated User=, got DynamicUser=%q User=%q", u.last(svc, "DynamicUser"), user)
	})
	t.Run("stop timeout covers shutdown_timeout", func(t *testing.T) {
		d, err := time.ParseDuration(strings.ReplaceAll(u.last(svc, "TimeoutStopSec"), " ", ""))
		require.NoError(t, err, "TimeoutStopSec in a Go-parsable form such as 30s")
		assert.Greater(t, d, config.Default().ShutdownTimeout.Duration, "systemd must not SIGKILL before the tracker's own shutdown_timeout")
	})
}

func isYes(v string) bool {
	switch strings.ToLower(v) {
	case "yes", "true", "on", "1":
		return true
	}
	return false
}

// systemdAnalyze returns the path of systemd-analyze, or skips the test without it (fails it
// when CHIHAYA_REQUIRE_SYSTEMD=1, as in CI).
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		const hint = "systemd-analyze not found: apt-get install systemd (bash .ci/run does)"
		if os.Getenv("CHIHAYA_REQUIRE_SYSTEMD") == "1" {
			t.Fatal("CHIHAYA_REQUIRE_SYSTEMD=1 but " + hint)
		}
		t.Skip(hint)
	}
	return p
}

// unitForBinary writes a copy of the unit, named chihaya.service, whose ExecStart runs bin
// instead of binaryPath (systemd-analyze verify checks that the binary exists and is
// executable), and returns its path.
func unitForBinary(t *testing.T, bin string) string {
	t.Helper()
	text, err := os.ReadFile(unitPath)
	require.NoError(t, err)
	from := "ExecStart=" + binaryPath + " "
	require.Equal(t, 1, strings.Count(string(text), from), "one ExecStart running %s", binaryPath)
	copyPath := filepath.Join(t.TempDir(), "chihaya.service")
	require.NoError(t, os.WriteFile(copyPath, []byte(strings.Replace(string(text), from, "ExecStart="+bin+" ", 1)), 0o644))
	return copyPath
}

// TestSystemdVerify runs `systemd-analyze verify` on the unit, with ExecStart pointed at the
// binary the Dockerfile's build command makes: no warning and no error may come out. Then
// `systemd-analyze security --offline` must rate its exposure at most maxExposure.
func TestSystemdVerify(t *testing.T) {
	analyze := systemdAnalyze(t)
	path := unitForBinary(t, staticBinary(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, analyze, "verify", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify says something about the unit")

	out, err = exec.CommandContext(ctx, analyze, "security", "--offline=true", "--no-pager", path).CombinedOutput()
	require.NoError(t, err, "systemd-analyze security:\n%s", out)
	m := regexp.MustCompile(`Overall exposure level for chihaya\.service: (\d+(?:\.\d+)?)`).FindSubmatch(out)
	require.NotNil(t, m, "no exposure level in:\n%s", out)
	exposure, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	t.Logf("systemd-analyze security: exposure %.1f", exposure)
	assert.LessOrEqual(t, exposure, maxExposure, "exposure of the unit (lower is better):\n%s", out)
}
