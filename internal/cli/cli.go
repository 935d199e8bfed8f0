// Package cli is the mwpeer command line: it turns flags and MWPEER_*
// variables into an mwpeer.Config and starts a peer, or talks to a running
// peer over its HTTP API. It is the only place that reads flags or the
// environment.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/sharding"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usageText = `mwpeer: a peer of the mwpeer decentralized inference swarm.

Usage:
  mwpeer [run] [flags]        join the swarm and serve (the default)
  mwpeer id [flags]           print this peer's ID and the --bootstrap value others use to join through it
  mwpeer status [--http ADDR] show a running peer's status
  mwpeer peers [--http ADDR]  list the peers a running peer knows
  mwpeer chat [flags] [PROMPT]
                              ask the swarm through a running peer; the answer streams to stdout.
                              Without a prompt: a conversation, one message a line (/bye ends it)
  mwpeer route [flags] PROMPT show which experts a running peer would ask, and why, without asking
  mwpeer shard split MODEL.gguf --out DIR
                              cut a MoE model into content-addressed shards and a manifest
  mwpeer shard verify DIR     check every shard in a shard directory against its manifests
  mwpeer ledger [--data-dir DIR]
                              earned, spent and balance per peer; 'mwpeer ledger help' for export and verify
  mwpeer keys add|list|rm     API keys with token budgets for the HTTP API; 'mwpeer keys help' for more
  mwpeer audit verify|tail|export [--data-dir DIR]
                              check, follow or export the signed audit chain; 'mwpeer audit help' for more
  mwpeer policy check FILE    check a consent policy file and print what it allows
  mwpeer grant PEERID --model M --tokens N --until DATE
                              sign a consent token that lets another peer use a model here
  mwpeer swarm-key new        a private swarm's key, for --swarm-key
  mwpeer cert operator-key|issue|pubkey|show
                              membership certificates for --trust-issuer and --cert; 'mwpeer cert help' for more
  mwpeer help                 this text

Every flag can also be set with the MWPEER_* variable named next to it; a flag wins over its variable.
Run 'mwpeer run --help' for the flags of run.
`

// Run executes the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runPeer(ctx, args, stdout, stderr)
	case "id":
		return runID(args, stdout, stderr)
	case "status":
		return runStatus(ctx, args, stdout, stderr)
	case "peers":
		return runPeers(ctx, args, stdout, stderr)
	case "chat":
		return runChat(ctx, args, stdout, stderr)
	case "route":
		return runRoute(ctx, args, stdout, stderr)
	case "shard":
		return runShard(args, stdout, stderr)
	case "ledger":
		return runLedger(args, stdout, stderr)
	case "swarm-key":
		return runSwarmKey(args, stdout, stderr)
	case "cert":
		return runCert(args, stdout, stderr)
	case "audit":
		return runAudit(ctx, args, stdout, stderr)
	case "keys":
		return runKeys(args, stdout, stderr)
	case "policy":
		return runPolicy(args, stdout, stderr)
	case "grant":
		return runGrant(args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(stderr, "mwpeer: unknown command %q\n\n%s", cmd, usageText)
		return exitUsage
	}
}

// env reads MWPEER_<NAME>, falling back to def.
func env(name, def string) string {
	if v, ok := os.LookupEnv("MWPEER_" + name); ok {
		return v
	}
	return def
}

// peerFlags binds the flags that describe a peer onto fs and returns a
// function that builds the Config once fs is parsed.
func peerFlags(fs *flag.FlagSet) func() (mwpeer.Config, error) {
	d := mwpeer.DefaultConfig()
	var envErrs []error
	envInt := func(name string, def int) int {
		v, err := envInt(name, def)
		envErrs = append(envErrs, err)
		return v
	}
	envBool := func(name string, def bool) bool {
		v, err := envBool(name, def)
		envErrs = append(envErrs, err)
		return v
	}
	envFloat := func(name string, def float64) float64 {
		v, err := envFloat(name, def)
		envErrs = append(envErrs, err)
		return v
	}
	envDuration := func(name string, def time.Duration) time.Duration {
		v, err := envDuration(name, def)
		envErrs = append(envErrs, err)
		return v
	}
	listen := fs.String("listen", env("LISTEN", strings.Join(d.Listen, ",")), "comma-separated libp2p listen multiaddrs; port 0 picks a free port (MWPEER_LISTEN)")
	boot := fs.String("bootstrap", env("BOOTSTRAP", ""), "comma-separated multiaddrs, each ending in /p2p/<peer ID>, of peers to join through (MWPEER_BOOTSTRAP)")
	httpAddr := fs.String("http", env("HTTP", d.HTTPAddr), "address of the HTTP API (OpenAI-compatible /v1, /api, /metrics); empty to disable (MWPEER_HTTP)")
	allowedHosts := fs.String("allowed-hosts", env("ALLOWED_HOSTS", ""), "comma-separated names the HTTP API answers to besides loopback and the --http host, e.g. a LAN name or a reverse proxy's (MWPEER_ALLOWED_HOSTS)")
	allowedOrigins := fs.String("allowed-origins", env("ALLOWED_ORIGINS", ""), "comma-separated browser origins (scheme://host[:port]) whose pages may call the HTTP API besides its own dashboard; * allows every web page (MWPEER_ALLOWED_ORIGINS)")
	httpInsecure := fs.Bool("http-insecure", envBool("HTTP_INSECURE", false), "allow --http on a non-loopback address without API keys: anyone who reaches it can use it (MWPEER_HTTP_INSECURE)")
	policy := fs.String("policy", env("POLICY", ""), "consent policy file (TOML, or YAML by extension): what this peer shares with whom; re-read on change and SIGHUP (MWPEER_POLICY)")
	grant := fs.String("grant", env("GRANT", ""), "comma-separated consent tokens other peers signed for this one (mwpeer grant), each presented to its signer (MWPEER_GRANT)")
	dataDir := fs.String("data-dir", env("DATA_DIR", d.DataDir), "directory for the identity key and state (MWPEER_DATA_DIR)")
	domains := fs.String("domains", env("DOMAINS", strings.Join(d.Domains, ",")), "comma-separated domains this peer is good at: general, code, math, creative, science, reasoning (MWPEER_DOMAINS)")
	models := fs.String("models", env("MODELS", ""), "comma-separated models to serve; default every model the engine has (MWPEER_MODELS)")
	engine := fs.String("engine", env("ENGINE", d.Engine), "what serves prompts here: auto (Ollama when it answers at --ollama, else the embedded engine with --model-file or the built-in model), ollama, embedded (the pure-Go engine on --model-file), synthetic (a fake backend for measuring the overlay) or none (MWPEER_ENGINE)")
	modelFile := fs.String("model-file", env("MODEL_FILE", ""), "GGUF file served by --engine embedded; empty serves the built-in 1 MB random-weight test model (MWPEER_MODEL_FILE)")
	shards := fs.String("shards", env("SHARDS", ""), "comma-separated directories of MoE model shards (from mwpeer shard split) to serve; fetched shards go to the first (MWPEER_SHARDS)")
	hostExperts := fs.String("host-experts", env("HOST_EXPERTS", ""), "parts of sharded MoE models to hold, fetching missing shards from the swarm; ';'-separated MODEL (everything), MODEL@dense (run the model) or MODEL@LAYERS:EXPERTS, e.g. 3fa2c1d09e4b@0-15:2,5 (MWPEER_HOST_EXPERTS)")
	ollama := fs.String("ollama", env("OLLAMA", d.Ollama), "Ollama's URL; default $OLLAMA_HOST, else http://127.0.0.1:11434 (MWPEER_OLLAMA)")
	verifyExperts := fs.Float64("verify-experts", envFloat("VERIFY_EXPERTS", d.VerifyExperts), "share (0..1) of remote expert calls recomputed on a second replica and compared bit for bit; a host caught answering wrongly is excluded (MWPEER_VERIFY_EXPERTS)")
	verifyAnswers := fs.Float64("verify-answers", envFloat("VERIFY_ANSWERS", d.VerifyAnswers), "share (0..1) of requests answered verified though they do not ask: two peers of the same model digest must agree token for token at temperature 0 (MWPEER_VERIFY_ANSWERS)")
	capacity := fs.Int("capacity", envInt("CAPACITY", 0), "concurrent requests this peer serves; 0 means what the engine runs at once: for Ollama $OLLAMA_NUM_PARALLEL x $OLLAMA_MAX_LOADED_MODELS when either is set, else measured (from 2, one more each time Ollama answers every call at once, up to 64); 1 for embedded; one per CPU for synthetic (MWPEER_CAPACITY)")
	mdns := fs.Bool("mdns", envBool("MDNS", true), "find peers on the local network by multicast DNS and join them with no --bootstrap; --mdns=false turns it off (MWPEER_MDNS)")
	lat := fs.String("lat", env("LAT", ""), "latitude of this peer in decimal degrees, for distance estimates (MWPEER_LAT)")
	lon := fs.String("lon", env("LON", ""), "longitude of this peer in decimal degrees (MWPEER_LON)")
	region := fs.String("region", env("REGION", ""), "free-form region name shown to others, e.g. eu-west (MWPEER_REGION)")
	announce := fs.String("announce", env("ANNOUNCE", ""), "comma-separated extra public multiaddrs to advertise, e.g. a forwarded port (MWPEER_ANNOUNCE)")
	dhtMode := fs.String("dht-mode", env("DHT_MODE", d.DHTMode), "DHT mode: auto (server unless found unreachable), server or client (MWPEER_DHT_MODE)")
	relay := fs.Bool("relay-service", envBool("RELAY_SERVICE", d.RelayService), "offer circuit relay v2 to NAT'd peers when publicly reachable (MWPEER_RELAY_SERVICE)")
	reach := fs.String("reachability", env("REACHABILITY", d.Reachability), "auto (AutoNAT decides), public or private; private makes a peer known to be behind NAT reserve relay slots at once (MWPEER_REACHABILITY)")
	synTokens := fs.Int("synthetic-tokens", envInt("SYNTHETIC_TOKENS", 16), "tokens in every answer of --engine synthetic (MWPEER_SYNTHETIC_TOKENS)")
	synRate := fs.Float64("synthetic-rate", envFloat("SYNTHETIC_RATE", 0), "tokens per second of --engine synthetic; 0 is as fast as possible (MWPEER_SYNTHETIC_RATE)")
	synTTFT := fs.Duration("synthetic-ttft", envDuration("SYNTHETIC_TTFT", 0), "delay before the first token of --engine synthetic (MWPEER_SYNTHETIC_TTFT)")
	queueWait := fs.Duration("queue-wait", envDuration("QUEUE_WAIT", d.QueueWait), "how long a request waits for a serving slot when all --capacity are taken before it is refused as busy (MWPEER_QUEUE_WAIT)")
	auditPrompts := fs.Bool("audit-prompts", envBool("AUDIT_PROMPTS", d.AuditPrompts), "keep prompts and answers in the audit chain, not only their hashes (MWPEER_AUDIT_PROMPTS)")
	remoteTokens := fs.Int("remote-max-tokens", envInt("REMOTE_MAX_TOKENS", d.RemoteMaxTokens), "max_tokens of a prompt from another peer that sets none (MWPEER_REMOTE_MAX_TOKENS)")
	remoteCap := fs.Int("remote-max-tokens-cap", envInt("REMOTE_MAX_TOKENS_CAP", d.RemoteMaxTokensCap), "most tokens a prompt from another peer gets, whatever it asks (MWPEER_REMOTE_MAX_TOKENS_CAP)")
	shardRate := fs.Int("shard-upload-rate", envInt("SHARD_UPLOAD_RATE", int(d.ShardUploadRate)), "bytes of shards uploaded per second, in all; 0 is no limit (MWPEER_SHARD_UPLOAD_RATE)")
	shardPeerRate := fs.Int("shard-peer-upload-rate", envInt("SHARD_PEER_UPLOAD_RATE", int(d.ShardPeerUploadRate)), "bytes of shards uploaded per second to one peer; 0 is no limit (MWPEER_SHARD_PEER_UPLOAD_RATE)")
	freeAllowance := fs.Int("free-allowance", envInt("FREE_ALLOWANCE", int(d.FreeAllowance)), "tokens a day served to a peer with no credit here before it ranks last in the queue (MWPEER_FREE_ALLOWANCE)")
	maxK := fs.Int("max-k", envInt("MAX_K", d.MaxK), "most experts a prompt is sent to in parallel (MWPEER_MAX_K)")
	announceMin := fs.Duration("announce-interval", envDuration("ANNOUNCE_INTERVAL", d.AnnounceMin), "shortest heartbeat between announcements; it grows with the swarm (MWPEER_ANNOUNCE_INTERVAL)")
	shardBits := fs.String("announce-shard-bits", env("ANNOUNCE_SHARD_BITS", shardBitsString(d.AnnounceShardBits)), "split announcements over 2^N topics by a hash prefix of the peer ID, for swarms past about 1,000 peers per topic: auto lets the swarm's size choose N; a number pins it, and every peer of the swarm must then use the same N (0: one topic) (MWPEER_ANNOUNCE_SHARD_BITS)")
	catalogBytes := fs.Int("catalog-max-bytes", envInt("CATALOG_MAX_BYTES", int(d.CatalogMaxBytes)), "bytes the catalog of other peers may hold, whatever they announce; past it the least recently heard strangers of the most crowded networks make room (MWPEER_CATALOG_MAX_BYTES)")
	member := memberFlags(fs)
	return func() (mwpeer.Config, error) {
		c := d
		if err := errors.Join(envErrs...); err != nil {
			return c, err
		}
		c.Listen = splitList(*listen)
		c.Bootstrap = splitList(*boot)
		c.HTTPAddr = *httpAddr
		c.AllowedHosts = splitList(*allowedHosts)
		c.AllowedOrigins = splitList(*allowedOrigins)
		c.HTTPInsecure = *httpInsecure
		c.DataDir = *dataDir
		c.PolicyFile = *policy
		c.Grants = splitList(*grant)
		c.Domains = splitList(*domains)
		c.Models = splitList(*models)
		c.Engine = *engine
		c.ModelFile = *modelFile
		c.Shards = splitList(*shards)
		specs, err := sharding.ParseHostSpecs(*hostExperts)
		if err != nil {
			return c, fmt.Errorf("--host-experts: %w", err)
		}
		c.HostExperts = specs
		c.VerifyExperts = *verifyExperts
		c.VerifyAnswers = *verifyAnswers
		c.Ollama = inference.OllamaURL(*ollama)
		c.Capacity = *capacity
		c.MDNS = *mdns
		if c.OllamaParallel, err = ollamaParallel(); err != nil {
			return c, err
		}
		c.Region = *region
		c.Announce = splitList(*announce)
		c.DHTMode = *dhtMode
		c.RelayService = *relay
		c.Reachability = *reach
		c.AnnounceMin = *announceMin
		c.CatalogMaxBytes = int64(*catalogBytes)
		if c.AnnounceShardBits, err = parseShardBits(*shardBits); err != nil {
			return c, err
		}
		c.MaxK = *maxK
		c.QueueWait = *queueWait
		c.FreeAllowance = int64(*freeAllowance)
		c.RemoteMaxTokens, c.RemoteMaxTokensCap = *remoteTokens, *remoteCap
		c.ShardUploadRate, c.ShardPeerUploadRate = int64(*shardRate), int64(*shardPeerRate)
		c.AuditPrompts = *auditPrompts
		if err := member(&c); err != nil {
			return c, err
		}
		if *synTokens < 1 || *synRate < 0 || *synTTFT < 0 {
			return c, fmt.Errorf("--synthetic-tokens must be at least 1, --synthetic-rate and --synthetic-ttft not negative")
		}
		c.Synthetic.Tokens, c.Synthetic.Rate, c.Synthetic.TTFT = *synTokens, *synRate, *synTTFT
		if (*lat == "") != (*lon == "") {
			return c, errors.New("--lat and --lon go together")
		}
		if *lat != "" {
			la, err1 := strconv.ParseFloat(*lat, 64)
			lo, err2 := strconv.ParseFloat(*lon, 64)
			if err1 != nil || err2 != nil {
				return c, fmt.Errorf("--lat/--lon: %q,%q are not numbers", *lat, *lon)
			}
			c.Location = &geo.Point{Lat: la, Lon: lo}
		}
		return c, flagError(c.Validate())
	}
}

// flags names, for each Config field, the flag that sets it.
var flags = map[string]string{
	"Listen": "--listen", "Announce": "--announce", "Bootstrap": "--bootstrap", "HTTPAddr": "--http", "AllowedOrigins": "--allowed-origins",
	"DataDir": "--data-dir", "PolicyFile": "--policy", "Grants": "--grant", "Domains": "--domains", "Engine": "--engine", "Location": "--lat/--lon",
	"QueueWait": "--queue-wait", "FreeAllowance": "--free-allowance",
	"RemoteMaxTokens": "--remote-max-tokens", "RemoteMaxTokensCap": "--remote-max-tokens-cap", "ShardUploadRate": "--shard-upload-rate",
	"DHTMode": "--dht-mode", "Reachability": "--reachability", "MaxK": "--max-k", "Capacity": "--capacity",
	"Shards": "--shards", "HostExperts": "--host-experts", "VerifyExperts": "--verify-experts", "VerifyAnswers": "--verify-answers",
	"SwarmKey": "--swarm-key", "TrustIssuers": "--trust-issuer", "Cert": "--cert",
}

// flagError names the flag behind a Config error: the library speaks of
// Config fields, the command of its flags.
func flagError(err error) error {
	var fe *mwpeer.FieldError
	if errors.As(err, &fe) {
		if f, ok := flags[fe.Field]; ok {
			return fmt.Errorf("%s: %w", f, fe.Err)
		}
	}
	return err
}

// startHint says what to do about a peer that did not start, when the
// error alone does not.
func startHint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "address already in use"):
		return "\n  another peer (or program) holds that address: stop it, or give this peer free ports, e.g. --http 127.0.0.1:8081 --listen /ip4/0.0.0.0/tcp/4002,/ip4/0.0.0.0/udp/4002/quic-v1 (and its own --data-dir)"
	case strings.Contains(msg, "permission denied"):
		return "\n  check that this user may write the data directory (--data-dir) and bind the ports"
	}
	return ""
}

// shutdownGrace bounds a clean stop, so that the process exits within 5 s
// of SIGINT or SIGTERM as documented, with room to exit after it.
const shutdownGrace = 4 * time.Second

func runPeer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	build := peerFlags(fs)
	logLevel := fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (MWPEER_LOG_LEVEL)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\nFlags of run (join the swarm, serve this machine's models, answer prompts on the HTTP API):\n", usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mwpeer run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := build()
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "mwpeer: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return exitUsage
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := applyTestRoutable(env("TEST_ROUTABLE", "")); err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitUsage
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	p, err := mwpeer.Start(startCtx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v%s\n", flagError(err), startHint(err))
		return exitError
	}
	fmt.Fprintf(stdout, "peer %s\nbootstrap %s\nhttp %s\n", p.ID(), p.BootstrapAddr(), p.HTTPAddr())
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			if err := p.ReloadPolicy(); err != nil {
				cfg.Logger.Warn("SIGHUP: policy not reloaded", "err", err)
			}
		}
	}
	cfg.Logger.Info("shutting down")
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			cfg.Logger.Warn("shutdown", "err", err)
		}
	case <-time.After(shutdownGrace):
		cfg.Logger.Error("shutdown took longer than " + shutdownGrace.String() + "; exiting anyway")
	}
	return exitOK
}

// ollamaParallel is how many calls Ollama runs at once by its own
// variables, as this machine's environment sets them (0 when it sets
// neither: the peer measures it).
func ollamaParallel() (int, error) {
	get := func(name string, def int) (int, bool, error) {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			return def, false, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1024 {
			return 0, false, fmt.Errorf("%s=%q is not a number of 0 to 1024; fix it or set --capacity", name, v)
		}
		if n == 0 {
			n = def // Ollama's own reading of 0
		}
		return n, true, nil
	}
	par, set1, err := get("OLLAMA_NUM_PARALLEL", 1)
	if err != nil {
		return 0, err
	}
	models, set2, err := get("OLLAMA_MAX_LOADED_MODELS", 3)
	if err != nil {
		return 0, err
	}
	if !set1 && !set2 {
		return 0, nil
	}
	return par * models, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func envInt(name string, def int) (int, error) {
	v := env(name, "")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, fmt.Errorf("MWPEER_%s=%q is not an integer", name, v)
	}
	return n, nil
}

func envBool(name string, def bool) (bool, error) {
	v := env(name, "")
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def, fmt.Errorf("MWPEER_%s=%q is not true or false", name, v)
	}
	return b, nil
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	v := env(name, "")
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return def, fmt.Errorf("MWPEER_%s=%q is not a duration like 5s", name, v)
	}
	return d, nil
}

func envFloat(name string, def float64) (float64, error) {
	v := env(name, "")
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return def, fmt.Errorf("MWPEER_%s=%q is not a number", name, v)
	}
	return f, nil
}

// shardBitsString is how --announce-shard-bits shows a width: "auto" or N.
func shardBitsString(bits int) string {
	if bits == mwpeer.AnnounceShardAuto {
		return "auto"
	}
	return strconv.Itoa(bits)
}

// parseShardBits reads --announce-shard-bits: "auto" or a number of bits.
func parseShardBits(s string) (int, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return mwpeer.AnnounceShardAuto, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("--announce-shard-bits %q: want auto or a number of bits", s)
	}
	return n, nil
}
