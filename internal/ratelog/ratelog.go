// Package ratelog writes the log lines a client can trigger at will (failed
// authentications, refusals, slow-consumer closes) without letting a flood
// of them flood the log.
//
// Lines are grouped by a key the caller picks from a closed set (protocol
// and reason, never client input). The first line of a key is written at
// once (the first burst lines, for a Logger from NewBurst). Repeats within
// the interval that follows are counted, not written;
// at the end of that interval one line stands for them all: the last
// repeat's message and fields plus repeated=<count>. A key that stays quiet
// for a whole interval is forgotten, so the next line is written at once
// again. A steady flood therefore costs one line per key per interval.
//
// A Logger is goroutine-safe. Log takes a mutex for a map lookup and never
// waits for the log's writer while holding it.
package ratelog

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// DefaultInterval is how long repeats of a key are collapsed when New is
// given zero and IntervalEnv is unset.
const DefaultInterval = 10 * time.Second

// IntervalEnv names the environment variable that replaces
// DefaultInterval for the whole process: a Go duration ("30s", "1m").
// A value that does not parse as a positive duration is ignored. Tests of
// the binary shorten it to see the summary lines within seconds.
const IntervalEnv = "GATEWAY_LOG_INTERVAL"

// defaultInterval is DefaultInterval, or IntervalEnv's value; read once.
var defaultInterval = sync.OnceValue(func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(IntervalEnv)); err == nil && d > 0 {
		return d
	}
	return DefaultInterval
})

// Interval returns the interval New uses when given zero: DefaultInterval
// or IntervalEnv's value.
func Interval() time.Duration { return defaultInterval() }

// maxKeys bounds the keys a Logger tracks. Keys come from closed sets, so
// this is never reached in practice; past it, new keys share one overflow
// key (their lines are still written, only collapsed together).
const maxKeys = 1024

// overflowKey collects the keys past maxKeys.
const overflowKey = "\x00overflow"

// MaxSubjectLen bounds a subject written by Refused: subjects may come
// from the client (a KOReader user name), and a log line stays short.
const MaxSubjectLen = 128

// Logger collapses repeated lines; see the package comment.
type Logger struct {
	log      *slog.Logger
	level    slog.Level
	interval time.Duration
	burst    int // lines of a key written per interval before counting
	now      func() time.Time
	// after arms the end-of-interval flush (time.AfterFunc; tests replace
	// it).
	after func(d time.Duration, f func())

	mu   sync.Mutex
	keys map[string]*entry
}

// entry is the state of one key.
type entry struct {
	until      time.Time // end of the current interval
	written    int       // lines written in this interval (a summary counts)
	repeated   int       // lines counted, not written, in this interval
	msg        string    // the last counted line
	attrs      []slog.Attr
	flushArmed bool
}

// New returns a Logger writing to log at level. interval: zero means
// Interval() (DefaultInterval unless IntervalEnv says otherwise). A nil
// log means slog.Default().
func New(log *slog.Logger, level slog.Level, interval time.Duration) *Logger {
	return NewBurst(log, level, interval, 1)
}

// NewBurst is New for lines that are worth reading one by one until they
// flood: up to burst lines of a key are written per interval (the summary
// of the last interval counts as one), the rest counted. burst: zero means
// 1, as New.
func NewBurst(log *slog.Logger, level slog.Level, interval time.Duration, burst int) *Logger {
	if log == nil {
		log = slog.Default()
	}
	if interval <= 0 {
		interval = defaultInterval()
	}
	return &Logger{
		log: log, level: level, interval: interval, burst: max(burst, 1), now: time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		keys:  make(map[string]*entry),
	}
}

// Log writes msg with attrs now, or counts it if a line of key was written
// less than an interval ago. key must come from a closed set. Log keeps
// attrs when it counts the line: do not reuse the slice.
func (l *Logger) Log(key, msg string, attrs ...slog.Attr) {
	if l == nil || !l.log.Enabled(context.Background(), l.level) {
		return
	}
	now := l.now()
	l.mu.Lock()
	e := l.keys[key]
	if e == nil && len(l.keys) >= maxKeys {
		key = overflowKey
		e = l.keys[key]
	}
	if e == nil || !now.Before(e.until) && e.repeated == 0 {
		if e == nil {
			e = &entry{}
			l.keys[key] = e
		}
		e.until = now.Add(l.interval) // a flush still armed re-arms itself
		e.written = 1
		l.mu.Unlock()
		l.log.LogAttrs(context.Background(), l.level, msg, attrs...)
		return
	}
	if e.repeated == 0 && e.written < l.burst {
		e.written++
		l.mu.Unlock()
		l.log.LogAttrs(context.Background(), l.level, msg, attrs...)
		return
	}
	e.repeated++
	e.msg, e.attrs = msg, attrs
	arm := !e.flushArmed
	e.flushArmed = true
	wait := e.until.Sub(now)
	l.mu.Unlock()
	if arm {
		l.after(max(wait, 0), func() { l.flush(key) })
	}
}

// flush ends key's interval: the summary line of its repeats, if any, and
// a new interval; or, after a quiet interval, forgets the key.
func (l *Logger) flush(key string) {
	now := l.now()
	l.mu.Lock()
	e := l.keys[key]
	if e == nil {
		l.mu.Unlock()
		return
	}
	if wait := e.until.Sub(now); wait > 0 {
		l.mu.Unlock() // the interval was renewed meanwhile
		l.after(wait, func() { l.flush(key) })
		return
	}
	e.flushArmed = false
	if e.repeated == 0 {
		delete(l.keys, key)
		l.mu.Unlock()
		return
	}
	msg, n := e.msg, e.repeated
	attrs := append(e.attrs[:len(e.attrs):len(e.attrs)], slog.Int("repeated", n))
	e.repeated, e.msg, e.attrs = 0, "", nil
	e.until, e.written = now.Add(l.interval), 1
	e.flushArmed = true // a quiet interval then forgets the key
	l.mu.Unlock()
	l.log.LogAttrs(context.Background(), l.level, msg, attrs...)
	l.after(l.interval, func() { l.flush(key) })
}

// Enabled reports whether the Logger writes lines at all (its level is
// enabled): callers skip building what they would pass.
func (l *Logger) Enabled() bool {
	return l != nil && l.log.Enabled(context.Background(), l.level)
}

// Refused logs a failed authentication or a refusal with the fields every
// protocol uses: protocol (when known), remote, subject (when known) and
// reason, then extra; collapsed per (msg, protocol, reason). Never pass a
// secret: a key id, a user name or a token subject is fine, a key, token
// or password is not. With the level off it builds nothing.
func (l *Logger) Refused(msg, protocol, reason string, remote netip.Addr, subject string, extra ...slog.Attr) {
	if !l.Enabled() {
		return
	}
	attrs := make([]slog.Attr, 0, 4+len(extra))
	if protocol != "" {
		attrs = append(attrs, slog.String("protocol", protocol))
	}
	if remote.IsValid() {
		attrs = append(attrs, slog.String("remote", remote.Unmap().String()))
	}
	if subject != "" {
		attrs = append(attrs, slog.String("subject", Truncate(subject, MaxSubjectLen)))
	}
	attrs = append(attrs, slog.String("reason", reason))
	attrs = append(attrs, extra...)
	l.Log(msg+"\x00"+protocol+"\x00"+reason, msg, attrs...)
}

// Truncate cuts s to at most n bytes on a rune boundary, marking a cut
// with "…", and replaces invalid UTF-8.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
