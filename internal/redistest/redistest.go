// Package redistest gives tests a real Redis server of their own.
//
// Start returns the URL of a Redis that no other test run shares: REDIS_URL
// when the environment names one, otherwise a redis-server started on a free
// loopback port in a temporary directory and stopped when the test ends.
// Where no Redis can be had the test is skipped loudly; under CI=true that is
// a failure instead, so CI never passes by skipping.
//
// StartLocal, StartCluster and StartSentinel start servers that require AUTH
// (requirepass, or an ACL user) when given WithAuth; by default they
// require nothing.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startTimeout bounds how long a fresh redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// startAttempts is how many times a new server is tried, each on ports
// picked afresh: a port found free may be taken before redis-server binds
// it (a cluster node's bus port too), and the server then exits at once.
const startAttempts = 3

// Server is a Redis server a test may use.
type Server struct {
	URL  string
	Addr string
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited (and been waited for)
	dir  string
	port int
	// busPort is a cluster node's cluster bus port (0 otherwise).
	busPort int
	// args, when set, replace the plain server's command line (a replica,
	// a sentinel).
	args []string
	// auth is what the server requires (the zero Auth: nothing).
	auth Auth
}

// Auth is what a server started by this package requires of its clients.
// Password alone is requirepass, the default user's password; with
// Username, an ACL user that may run everything while the default user is
// off. A replica authenticates to its master with its master's Auth
// (masterauth, masteruser), so that a failover can promote it. The zero
// Auth requires nothing: the default.
type Auth struct{ Username, Password string }

// Option changes what StartLocal, StartCluster or StartSentinel start.
type Option func(*options)

type options struct{ auth Auth }

// WithAuth makes the servers started require a (see Auth); for
// StartSentinel, the Sentinel itself (its master's Auth comes from the
// master).
func WithAuth(a Auth) Option { return func(o *options) { o.auth = a } }

func applyOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// serverArgs are the redis-server arguments that make a server require a
// and its replicas authenticate to their master with it.
func (a Auth) serverArgs() []string {
	switch {
	case a.Password == "":
		return nil
	case a.Username == "":
		return []string{"--requirepass", a.Password, "--masterauth", a.Password}
	}
	return []string{"--user", a.Username, "on", ">" + a.Password, "~*", "&*", "+@all",
		"--user", "default", "off", "--masteruser", a.Username, "--masterauth", a.Password}
}

// configLines are serverArgs as lines of a configuration file (a
// Sentinel's, which takes no masterauth).
func (a Auth) configLines() string {
	switch {
	case a.Password == "":
		return ""
	case a.Username == "":
		return "requirepass " + a.Password + "\n"
	}
	return "user " + a.Username + " on >" + a.Password + " ~* &* +@all\nuser default off\n"
}

// Start returns a Redis for t. See the package comment.
func Start(t testing.TB) *Server {
	t.Helper()
	if url := os.Getenv("REDIS_URL"); url != "" {
		return &Server{URL: url, Addr: strings.TrimPrefix(strings.TrimPrefix(url, "redis://"), "/")}
	}
	return startProcess(t, Auth{}, nil)
}

// Restart stops the server (if it runs) and starts it again on the same
// port: the tool for tests of reconnects. Data is not kept.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.dir == "" {
		t.Fatal("redistest: Restart needs a server started by this package")
	}
	s.Stop()
	bin, _ := exec.LookPath("redis-server")
	if err := s.start(bin); err != nil {
		t.Fatal(err)
	}
}

// Stop kills the server; Start's cleanup calls it too.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// start runs redis-server with s's arguments, its log in s.dir, and waits
// until it answers PING; a server that exits first (its port taken since
// it was picked) fails at once, with its log's last line.
func (s *Server) start(bin string) error {
	args := s.args
	if args == nil {
		args = plainArgs(s)
	}
	logPath := filepath.Join(s.dir, "redis-server.log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.done)
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		if r := command(s, "PING"); len(r) == 1 && r[0] == "PONG" {
			return nil
		}
		select {
		case <-s.done:
			s.cmd = nil
			return fmt.Errorf("redistest: redis-server on %s exited: %s", s.Addr, lastLine(logPath))
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Stop()
	return fmt.Errorf("redistest: redis-server on %s did not answer PING within %v: %s", s.Addr, startTimeout, lastLine(logPath))
}

// logTailLines is how much of each node's log a failed WaitHealthy shows.
const logTailLines = 25

// logTail returns the last n lines of the server's log.
func (s *Server) logTail(n int) string { return lastLines(filepath.Join(s.dir, "redis-server.log"), n) }

// lastLine returns the last non-empty line of the file at path.
func lastLine(path string) string { return lastLines(path, 1) }

// lastLines returns the last n lines of the file at path, trimmed.
func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("redistest: no Redis (%s); CI=true forbids skipping", why)
	}
	t.Skipf("redistest: SKIPPING, no Redis: %s", why)
}

// StartLocal is Start without the REDIS_URL escape: always a redis-server
// process of the test's own, for tests that kill it or replicate it, or
// that need it to require AUTH (WithAuth).
func StartLocal(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := applyOptions(opts)
	if o.auth == (Auth{}) {
		return startProcess(t, Auth{}, nil)
	}
	return startProcess(t, o.auth, func(s *Server) []string { return append(plainArgs(s), o.auth.serverArgs()...) })
}

// plainArgs is the command line of a plain server.
func plainArgs(s *Server) []string {
	return []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir}
}

// StartReplica starts a redis-server replicating s (REPLICAOF) and waits
// until its link to s is up, so a failover can promote it. It requires
// s's Auth and authenticates to s with it.
func (s *Server) StartReplica(t testing.TB) *Server {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.Addr)
	// Redis 7 waits 5 s for more replicas before a diskless full sync.
	if command(s, "CONFIG SET repl-diskless-sync-delay 0") == nil {
		t.Fatalf("redistest: CONFIG SET on %s failed", s.Addr)
	}
	r := startProcess(t, s.auth, func(r *Server) []string {
		return append(append(plainArgs(r), "--replicaof", host, port), s.auth.serverArgs()...)
	})
	deadline := time.Now().Add(startTimeout)
	for !strings.Contains(strings.Join(command(r, "INFO replication"), ""), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatalf("redistest: replica %s did not sync with %s within %v", r.Addr, s.Addr, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// SentinelDownAfter is how long a master started by these tests may be
// silent before a sentinel of StartSentinel calls it down: short, so a
// failover fits a test of seconds.
const SentinelDownAfter = 500 * time.Millisecond

// StartSentinel starts a Redis Sentinel that monitors master under name
// with quorum 1 (SentinelDownAfter, failover timeout 2 s) and waits until
// it knows at least one replica of it. Its Addr is the sentinel's. It
// authenticates to the master and replicas with the master's Auth
// (auth-user, auth-pass); WithAuth makes the Sentinel itself require one.
func StartSentinel(t testing.TB, name string, master *Server, opts ...Option) *Server {
	t.Helper()
	host, port, _ := net.SplitHostPort(master.Addr)
	o := applyOptions(opts)
	sn := startProcess(t, o.auth, func(sn *Server) []string {
		conf := filepath.Join(sn.dir, "sentinel.conf") // sentinel rewrites it
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s %s %s 1\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 2000\n",
			sn.port, sn.dir, name, host, port, name, SentinelDownAfter.Milliseconds(), name)
		if a := master.auth; a.Password != "" {
			body += fmt.Sprintf("sentinel auth-pass %s %s\n", name, a.Password)
			if a.Username != "" {
				body += fmt.Sprintf("sentinel auth-user %s %s\n", name, a.Username)
			}
		}
		body += o.auth.configLines()
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{conf, "--sentinel"}
	})
	deadline := time.Now().Add(startTimeout)
	for len(command(sn, "SENTINEL replicas "+name)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("redistest: sentinel %s found no replica of %s within %v", sn.Addr, master.Addr, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sn
}

// MasterAddr asks the sentinel s for the address of the master it calls
// name ("" when it cannot tell).
func (s *Server) MasterAddr(name string) string {
	parts := command(s, "SENTINEL get-master-addr-by-name "+name)
	if len(parts) != 2 {
		return ""
	}
	return net.JoinHostPort(parts[0], parts[1])
}

func startProcess(t testing.TB, auth Auth, args func(*Server) []string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server not found on PATH")
	}
	for range startAttempts {
		s := &Server{dir: t.TempDir(), port: freePort(t), auth: auth}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		s.URL = "redis://" + s.Addr
		if args != nil {
			s.args = args(s)
		}
		if err = s.start(bin); err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		t.Logf("%v; trying other ports", err)
	}
	unavailable(t, err.Error())
	return nil
}

// command sends s one inline command, after AUTH when s requires it, and
// returns its reply flattened: the strings of a (nested) array, or the one
// string; nil on any error (or an error reply). Bounded by a second.
func command(s *Server, cmd string) []string {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if s.auth.Password != "" {
		auth := []string{"AUTH", s.auth.Password}
		if s.auth.Username != "" {
			auth = []string{"AUTH", s.auth.Username, s.auth.Password}
		}
		var ok []string
		if _, err := c.Write(respCommand(auth...)); err != nil || readReply(r, &ok) != nil {
			return nil
		}
	}
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return nil
	}
	var out []string
	if readReply(r, &out) != nil {
		return nil
	}
	return out
}

// respCommand encodes a command as a RESP array (an inline command would
// split a password with a blank).
func respCommand(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// readReply reads one RESP2 reply, appending its strings to out.
func readReply(r *bufio.Reader, out *[]string) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		*out = append(*out, line[1:])
	case '-':
		return fmt.Errorf("%s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return err
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		*out = append(*out, string(b[:n]))
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return err
		}
		for range n {
			if err := readReply(r, out); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// ClusterNodeTimeout is the cluster-node-timeout of clusters StartCluster
// starts: short, so a replica takes over a killed master within a test of
// seconds (Redis fails over after about twice this plus an election delay).
const ClusterNodeTimeout = 2 * time.Second

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of real redis-server processes.
type Cluster struct {
	// Masters[i] serves the i-th equal range of the hash slots at start;
	// Replicas[i] replicate Masters[i].
	Masters  []*Server
	Replicas [][]*Server
}

// StartCluster starts a Redis Cluster of masters masters with replicas
// replicas each (cluster-require-full-coverage no, so the other shards
// serve while one fails over; cluster-replica-validity-factor 0) and waits until every node reports the
// cluster ok and every replica is in sync. WithAuth makes every node
// require it, and the replicas authenticate to their masters with it.
func StartCluster(t testing.TB, masters, replicas int, opts ...Option) *Cluster {
	t.Helper()
	auth := applyOptions(opts).auth
	clusterArgs := func(s *Server) []string {
		s.busPort = freePort(t)
		args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", s.dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			// A bus port picked free like the port, rather than port+10000,
			// which may be a client socket's ephemeral port.
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
			"--cluster-require-full-coverage", "no", "--repl-diskless-sync-delay", "0",
			// A replica may take over however long ago it last heard its
			// master: on a loaded test box that link lags.
			"--cluster-replica-validity-factor", "0"}
		return append(args, auth.serverArgs()...)
	}
	c := &Cluster{Replicas: make([][]*Server, masters)}
	for i := range masters {
		m := startProcess(t, auth, clusterArgs)
		lo, hi := i*clusterSlots/masters, (i+1)*clusterSlots/masters-1
		mustCommand(t, m, fmt.Sprintf("CLUSTER ADDSLOTSRANGE %d %d", lo, hi))
		c.Masters = append(c.Masters, m)
	}
	all := append([]*Server(nil), c.Masters...)
	for i := range masters {
		for range replicas {
			r := startProcess(t, auth, clusterArgs)
			c.Replicas[i] = append(c.Replicas[i], r)
			all = append(all, r)
		}
	}
	for _, s := range all[1:] {
		host, port, _ := net.SplitHostPort(s.Addr)
		mustCommand(t, all[0], "CLUSTER MEET "+host+" "+port+" "+strconv.Itoa(s.busPort))
	}
	waitUntil(t, "every node to know every other", func() bool {
		for _, s := range all {
			if n := len(strings.Split(strings.TrimSpace(strings.Join(command(s, "CLUSTER NODES"), "")), "\n")); n != len(all) {
				return false
			}
		}
		return true
	})
	for i, m := range c.Masters {
		id := mustCommand(t, m, "CLUSTER MYID")[0]
		for _, r := range c.Replicas[i] {
			mustCommand(t, r, "CLUSTER REPLICATE "+id)
		}
	}
	c.WaitHealthy(t)
	return c
}

// Addrs returns the address of every node, masters first: the seed list
// for a cluster client.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, m := range c.Masters {
		out = append(out, m.Addr)
	}
	for _, rs := range c.Replicas {
		for _, r := range rs {
			out = append(out, r.Addr)
		}
	}
	return out
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// every running replica's link to its master is up (after a failover: the
// promoted replica serves and the survivors follow it).
//
// A replica that has not won its election within electionStall (seen
// rarely on a loaded machine: its master marked failed everywhere, the
// replica never promoted) is made to take over (CLUSTER FAILOVER
// TAKEOVER), logged: these tests are about clients following a promotion,
// not about Redis's election.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	defer c.logStateIfFailed(t)
	stallAt := time.Now().Add(electionStall)
	waitUntil(t, "the cluster to be ok with replicas in sync", func() bool {
		if time.Now().After(stallAt) {
			c.TakeOverFailedMasters(t)
			stallAt = time.Now().Add(electionStall)
		}
		for _, s := range c.nodes() {
			if s.cmd == nil {
				continue
			}
			info := strings.Join(command(s, "CLUSTER INFO"), "")
			if !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			repl := strings.Join(command(s, "INFO replication"), "")
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return false
			}
		}
		return true
	})
}

// electionStall is how long WaitHealthy lets a replica of a failed master
// win its election before it makes the replica take over: several times
// the few seconds an election takes (twice ClusterNodeTimeout and a retry).
const electionStall = 15 * time.Second

// TakeOverFailedMasters makes each running replica whose master it sees
// failed take over that master's slots without an election, logged: for a
// test waiting for a promotion by other means than WaitHealthy, once it
// has waited electionStall.
func (c *Cluster) TakeOverFailedMasters(t testing.TB) {
	for _, s := range c.nodes() {
		if s.cmd == nil {
			continue
		}
		if master := failedMasterOf(strings.Join(command(s, "CLUSTER NODES"), "")); master != "" {
			t.Logf("redistest: replica %s not promoted within %v of its master %s failing: CLUSTER FAILOVER TAKEOVER", s.Addr, electionStall, master)
			command(s, "CLUSTER FAILOVER TAKEOVER")
		}
	}
}

// failedMasterOf returns, from a node's CLUSTER NODES, the address of its
// master if the node is a replica and sees that master failed, else "".
func failedMasterOf(nodes string) string {
	var masterID string
	byID := map[string][]string{}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		byID[f[0]] = f
		if strings.Contains(f[2], "myself") && strings.Contains(f[2], "slave") {
			masterID = f[3]
		}
	}
	m := byID[masterID]
	if m == nil || !slices.Contains(strings.Split(m[2], ","), "fail") {
		return ""
	}
	return m[1]
}

// logStateIfFailed logs each running node's view of the cluster and its
// replication when t has failed: a failover that never completes (seen
// rarely on a loaded machine) is explained by who saw whom fail.
func (c *Cluster) logStateIfFailed(t testing.TB) {
	if !t.Failed() {
		return
	}
	for _, s := range c.nodes() {
		if s.cmd == nil {
			continue
		}
		t.Logf("redistest: node %s CLUSTER NODES:\n%s\nINFO replication:\n%s\nlog (last %d lines):\n%s", s.Addr,
			strings.Join(command(s, "CLUSTER NODES"), ""), strings.Join(command(s, "INFO replication"), ""),
			logTailLines, s.logTail(logTailLines))
	}
}

// Owner returns the running node that serves slot as a master now, or nil.
func (c *Cluster) Owner(slot int) *Server {
	for _, s := range c.nodes() {
		if s.cmd == nil {
			continue
		}
		for _, line := range strings.Split(strings.Join(command(s, "CLUSTER NODES"), ""), "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "myself") || !strings.Contains(f[2], "master") {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, found := strings.Cut(r, "-")
				if !found {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && a <= slot && slot <= b {
					return s
				}
			}
		}
	}
	return nil
}

// MoveSlot gives the (keyless) slot s from master from to master to, as
// resharding does (IMPORTING, MIGRATING, then NODE on every master).
func (c *Cluster) MoveSlot(t testing.TB, s int, from, to *Server) {
	t.Helper()
	slot := strconv.Itoa(s)
	toID := mustCommand(t, to, "CLUSTER MYID")[0]
	fromID := mustCommand(t, from, "CLUSTER MYID")[0]
	mustCommand(t, to, "CLUSTER SETSLOT "+slot+" IMPORTING "+fromID)
	mustCommand(t, from, "CLUSTER SETSLOT "+slot+" MIGRATING "+toID)
	mustCommand(t, to, "CLUSTER SETSLOT "+slot+" NODE "+toID)
	mustCommand(t, from, "CLUSTER SETSLOT "+slot+" NODE "+toID)
	for _, m := range c.Masters {
		if m != from && m != to && m.cmd != nil {
			mustCommand(t, m, "CLUSTER SETSLOT "+slot+" NODE "+toID)
		}
	}
}

func (c *Cluster) nodes() []*Server {
	out := append([]*Server(nil), c.Masters...)
	for _, rs := range c.Replicas {
		out = append(out, rs...)
	}
	return out
}

func mustCommand(t testing.TB, s *Server, cmd string) []string {
	t.Helper()
	out := command(s, cmd)
	if out == nil {
		t.Fatalf("redistest: %s on %s failed", cmd, s.Addr)
	}
	return out
}

// waitUntil polls cond every 20 ms for up to 30 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("redistest: timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
