package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/token"
)

func key(args []string) error {
	if len(args) == 0 {
		return usageErr("key", errors.New("want a subcommand: issue, revoke or revoke-subject"))
	}
	switch args[0] {
	case "issue":
		return keyIssue(args[1:])
	case "revoke":
		return keyRevoke(args[1:])
	case "revoke-subject":
		return keyRevokeSubject(args[1:])
	case "-h", "-help", "--help", "help":
		printHelp(os.Stdout, newFlagSet("key"))
		return errHelped
	}
	return usageErr("key", fmt.Errorf("unknown subcommand %q", args[0]))
}

// keyIssue prints one key signed with the server's secret (same
// --data-dir / --secret-file / GATEWAY_SECRET as serve). It never creates
// a secret: one made up here would sign keys no node accepts.
func keyIssue(args []string) error {
	var dataDir, secretFile, subject string
	var ttl time.Duration
	fs := newFlagSet("key issue")
	fs.StringVar(&dataDir, "data-dir", node.DefaultDataDir, "the node's data directory: its secret is read from <data-dir>/secret (never created here)")
	fs.StringVar(&secretFile, "secret-file", "", "file of secrets, one per line, the first signs (wins over --data-dir; GATEWAY_SECRET wins over both)")
	fs.StringVar(&subject, "subject", "", "whom the key identifies (1 to 64 bytes; required)")
	fs.DurationVar(&ttl, "ttl", token.DefaultKeyTTL, "lifetime (at most 8784h)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if subject == "" {
		return usageErr("key issue", errors.New("--subject is required"))
	}
	if fs.NArg() > 0 {
		return usageErr("key issue", fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	// Absolute paths, so that every message says where exactly it looked.
	if secretFile != "" {
		secretFile = absPath(secretFile)
	}
	if dataDir != "" {
		dataDir = absPath(dataDir)
	}
	env := os.Getenv("GATEWAY_SECRET")
	secrets, _, err := token.ReadSecrets(env, secretFile, dataDir)
	switch {
	case errors.Is(err, token.ErrNoSecret):
		return fmt.Errorf("key issue: no secret to sign with, and none is created here: GATEWAY_SECRET is unset, "+
			"--secret-file is not given, and %s does not exist. Give the node's --data-dir (or --secret-file, or "+
			"GATEWAY_SECRET), or start `gateway serve --data-dir %s` once so it generates the secret",
			filepath.Join(dataDir, token.SecretFileName), dataDir)
	case err != nil:
		return fmt.Errorf("key issue: %w", err)
	}
	switch {
	case env != "":
		fmt.Fprintf(os.Stderr, "gateway: signing with GATEWAY_SECRET (%d secret(s), the first signs)\n", secrets.Len())
	case secretFile != "":
		fmt.Fprintf(os.Stderr, "gateway: signing with the secret in %s (--secret-file)\n", secretFile)
	default:
		fmt.Fprintf(os.Stderr, "gateway: signing with the secret in %s\n", filepath.Join(dataDir, token.SecretFileName))
	}
	raw, claims, err := secrets.Issue(subject, ttl, time.Now())
	if err != nil {
		return fmt.Errorf("key issue: %w", err)
	}
	fmt.Println(token.EncodeText(raw))
	fmt.Fprintf(os.Stderr, "key id %s, subject %q, expires %s\n", claims.ID, claims.Subject, claims.Expires.Format(time.RFC3339))
	return nil
}

// absPath is p made absolute (p itself if the working directory is gone).
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func adminFlag(fs *flag.FlagSet) *string {
	fs.StringVar(&adminToken, "admin-token", "", "the admin API's bearer token, if it has one")
	return fs.String("admin", "http://"+gateway.DefaultAdminListen, "the admin listener's URL")
}

// adminToken is the --admin-token of the key subcommands.
var adminToken string

func keyRevoke(args []string) error {
	fs := newFlagSet("key revoke")
	admin := adminFlag(fs)
	id := fs.String("id", "", "revoke by key id (16 hex digits) instead of by key")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	body := map[string]string{}
	switch {
	case *id != "" && fs.NArg() == 0:
		body["id"] = *id
	case *id == "" && fs.NArg() == 1:
		body["key"] = fs.Arg(0)
	default:
		return usageErr("key revoke", errors.New("give one KEY argument or --id"))
	}
	return postAdmin(*admin, "/api/revoke", body)
}

func keyRevokeSubject(args []string) error {
	fs := newFlagSet("key revoke-subject")
	admin := adminFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("key revoke-subject", errors.New("give one SUBJECT argument"))
	}
	return postAdmin(*admin, "/api/revoke/subject", map[string]string{"subject": fs.Arg(0)})
}

// postAdmin posts JSON to the admin API and prints its answer.
func postAdmin(base, path string, body any) error {
	b, _ := json.Marshal(body)
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(base, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin answered %s: %s", resp.Status, bytes.TrimSpace(out))
	}
	fmt.Print(string(out))
	return nil
}
