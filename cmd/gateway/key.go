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
	"strings"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/token"
)

func key(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("key: want issue, revoke or revoke-subject\n%s", usage)
	}
	switch args[0] {
	case "issue":
		return keyIssue(args[1:])
	case "revoke":
		return keyRevoke(args[1:])
	case "revoke-subject":
		return keyRevokeSubject(args[1:])
	}
	return fmt.Errorf("key: unknown subcommand %q", args[0])
}

// keyIssue prints one key signed with the server's secret (same
// --data-dir / --secret-file / GATEWAY_SECRET as serve).
func keyIssue(args []string) error {
	var cfg node.Config
	var subject string
	var ttl time.Duration
	fs := flag.NewFlagSet("key issue", flag.ContinueOnError)
	secretFlags(fs, &cfg)
	fs.StringVar(&subject, "subject", "", "whom the key identifies (1 to 64 bytes)")
	fs.DurationVar(&ttl, "ttl", token.DefaultKeyTTL, "lifetime (at most 8784h)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if subject == "" {
		return errors.New("key issue: --subject is required")
	}
	secrets, _, err := token.LoadSecrets(os.Getenv("GATEWAY_SECRET"), cfg.SecretFile, cfg.DataDir)
	if err != nil {
		return err
	}
	raw, claims, err := secrets.Issue(subject, ttl, time.Now())
	if err != nil {
		return err
	}
	fmt.Println(token.EncodeText(raw))
	fmt.Fprintf(os.Stderr, "key id %s, subject %q, expires %s\n", claims.ID, claims.Subject, claims.Expires.Format(time.RFC3339))
	return nil
}

func adminFlag(fs *flag.FlagSet) *string {
	fs.StringVar(&adminToken, "admin-token", "", "the admin API's bearer token, if it has one")
	return fs.String("admin", "http://"+gateway.DefaultAdminListen, "the admin listener's URL")
}

// adminToken is the --admin-token of the key subcommands.
var adminToken string

func keyRevoke(args []string) error {
	fs := flag.NewFlagSet("key revoke", flag.ContinueOnError)
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
		return errors.New("key revoke: give one KEY argument or --id")
	}
	return postAdmin(*admin, "/api/revoke", body)
}

func keyRevokeSubject(args []string) error {
	fs := flag.NewFlagSet("key revoke-subject", flag.ContinueOnError)
	admin := adminFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("key revoke-subject: give one SUBJECT argument")
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
