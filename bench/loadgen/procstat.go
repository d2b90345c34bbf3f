package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100
// on every Linux this runs on).
const clkTck = 100

// Sample is a server process's resource usage at one moment.
type Sample struct {
	RSS  int64   `json:"rss_bytes"`        // /proc/<pid>/status VmRSS
	Heap int64   `json:"heap_inuse_bytes"` // go_memstats_heap_inuse_bytes, -1 if unknown
	CPU  float64 `json:"cpu_seconds"`      // utime+stime
}

// SampleProcess reads RSS and CPU time of pid from /proc and the Go heap
// from the Prometheus text at metricsURL. pid 0 or an empty URL skip the
// corresponding fields.
func SampleProcess(pid int, metricsURL string) Sample {
	s := Sample{Heap: -1}
	if pid > 0 {
		s.RSS, _ = readRSS(pid)
		s.CPU, _ = readCPU(pid)
	}
	if metricsURL != "" {
		if h, err := ReadMetric(metricsURL, "go_memstats_heap_inuse_bytes"); err == nil {
			s.Heap = int64(h)
		}
	}
	return s
}

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

func readCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad stat for %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat for %d", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad stat for %d", pid)
	}
	return (ut + st) / clkTck, nil
}

var metricsClient = &http.Client{Timeout: 5 * time.Second}

// ReadMetric returns the value of an unlabelled metric (the first series
// of a labelled one) from a Prometheus text endpoint.
func ReadMetric(url, name string) (float64, error) {
	var out float64
	err := scanMetric(url, name, func(v float64) bool { out = v; return false })
	return out, err
}

// SumMetric returns the sum of every series of a metric (all its label
// values) from a Prometheus text endpoint.
func SumMetric(url, name string) (float64, error) {
	var sum float64
	err := scanMetric(url, name, func(v float64) bool { sum += v; return true })
	return sum, err
}

// scanMetric gives each value of metric name at url to each, in order,
// while each returns true; an error if there is none.
func scanMetric(url, name string, each func(float64) bool) error {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			f := strings.Fields(rest)
			if len(f) == 0 {
				continue
			}
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return err
			}
			found = true
			if !each(v) {
				return nil
			}
		}
	}
	if !found {
		return fmt.Errorf("%s: no %s", url, name)
	}
	return nil
}
