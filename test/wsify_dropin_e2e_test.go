package test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/internal/redistest"
)

// TestWsifyDropInBindsOnlyListenAddr: `gateway wsify` with only wsify's
// own flags binds -listen-addr alone and writes nothing (issue 11 item 4):
// it starts while 127.0.0.1:8081 (the admin listener's default) is held by
// another listener, serves, and its empty working directory stays empty.
func TestWsifyDropInBindsOnlyListenAddr(t *testing.T) {
	t.Parallel()
	if held, err := net.Listen("tcp", "127.0.0.1:8081"); err == nil {
		t.Cleanup(func() { _ = held.Close() })
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("hold 127.0.0.1:8081: %v", err)
	} // else someone else holds it: just as good
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		dropInBindsOnlyListenAddr(t, "-broker-driver", "memory")
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		dropInBindsOnlyListenAddr(t, "-broker-driver", "redis", "-broker-dsn", redistest.Start(t).URL)
	})
}

// dropInBindsOnlyListenAddr starts `gateway wsify` with wsify's flags
// (broker ones given) in an empty directory and checks it serves, listens
// on -listen-addr alone and writes nothing.
func dropInBindsOnlyListenAddr(t *testing.T, broker ...string) {
	dir := t.TempDir()
	listen := e2eFreeAddr(t)
	args := append([]string{"wsify", "-listen-addr", listen, "-broadcasting-key", "k1"}, broker...)
	cmd := exec.Command(e2eGatewayBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = withoutGatewayEnv(os.Environ())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	})
	wsifyMember(t, listen, exited)

	if runtime.GOOS == "linux" {
		_, port, _ := net.SplitHostPort(listen)
		if got := listeningPorts(t, cmd.Process.Pid); !slices.Equal(got, []string{port}) {
			t.Errorf("gateway wsify listens on ports %v, want only %s (-listen-addr)", got, port)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("gateway wsify wrote %v into its working directory, want nothing", names)
	}
}

// withoutGatewayEnv drops GATEWAY_* variables (a secret or a data dir from
// the caller's environment would change what the process does).
func withoutGatewayEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "GATEWAY_") })
}

// listeningPorts returns the sorted TCP ports process pid listens on, from
// its socket descriptors and the kernel's socket tables.
func listeningPorts(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var ports []string
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "net", table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			hexPort := fields[1][strings.LastIndexByte(fields[1], ':')+1:]
			b, err := hex.DecodeString(hexPort)
			if err != nil || len(b) != 2 {
				t.Fatalf("bad local address %q", fields[1])
			}
			ports = append(ports, strconv.Itoa(int(b[0])<<8|int(b[1])))
		}
		f.Close()
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// TestWsifyMaxBacklogFlags: -max-backlog (gateway wsify) and
// --wsify-max-backlog (gateway serve) set the bound of messages awaiting
// the authorizer: with 2, a third message while the authorizer hangs
// closes the connection with 1008.
func TestWsifyMaxBacklogFlags(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	az := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"hang"`)) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(az.Close)
	t.Cleanup(func() { close(release) })

	// gateway wsify -max-backlog 2
	listen := e2eFreeAddr(t)
	cmd := exec.Command(e2eGatewayBinary(t), "wsify", "-listen-addr", listen, "-authorizer-url", az.URL, "-max-backlog", "2")
	cmd.Dir = t.TempDir()
	cmd.Env = withoutGatewayEnv(os.Environ())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("gateway wsify stderr:\n%s", stderr.String())
		}
	})
	expectBacklogClose(t, "ws://"+listen+"/ws")

	// gateway serve --wsify-max-backlog 2
	wsifyAddr := e2eFreeAddr(t)
	if _, err := e2eServeAt(t, e2eEnv(), e2eFreeAddr(t), e2eFreeAddr(t), wsifyAddr, "--data-dir", t.TempDir(),
		"--wsify-authorizer-url", az.URL, "--wsify-max-backlog", "2"); err != nil {
		t.Fatal(err)
	}
	expectBacklogClose(t, "ws://"+wsifyAddr+"/ws")
}

// expectBacklogClose dials url (retrying until it listens), sends a join
// the authorizer holds and two more messages: the third unprocessed one
// passes a backlog of 2 and closes the connection with 1008.
func expectBacklogClose(t *testing.T, url string) {
	t.Helper()
	var c *websocket.Conn
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if c, _, err = websocket.Dial(testCtx(t), url, nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening: %v", url, err)
		}
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	writeText(t, c, `{"command":"join","args":{"channel":"hang"}}`)
	writeText(t, c, `{"command":"join","args":{"channel":"a"}}`)
	writeText(t, c, `{"command":"join","args":{"channel":"b"}}`)
	expectClose(t, c, websocket.StatusPolicyViolation, "too many messages awaiting the authorizer")
}
