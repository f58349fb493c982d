// Shared-token authentication of coordinator RPCs: the client sends the metadata
// "authorization: Bearer <token>"; the server compares it in constant time. An empty server token
// accepts everyone (the coordinator logs a warning at start).
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>

#include "runtime/core/status.h"

namespace archi::coordinator {

inline constexpr char kAuthMetadata[] = "authorization";

// OK, or UNAUTHENTICATED naming what was wrong (missing or wrong token; never the token).
grpc::Status CheckToken(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                        const std::string& token);

// Adds the token to a client call (nothing when `token` is empty).
void AddToken(grpc::ClientContext& ctx, const std::string& token);

// HMAC-SHA256 of `data` under `key`, as lowercase hex.
std::string HmacSha256Hex(const std::string& key, const std::string& data);

// The secret the coordinator signs member credentials with: derived from the shared token and
// the pipeline name, so a restarted coordinator (same token) still accepts the credentials it
// issued, and a frontend that knows the token can present its own.
std::string MemberSecret(const std::string& token, const std::string& pipeline);

// The rendezvous-store credential of the frontend ("frontend:<hmac>"), for a frontend whose
// store is hosted elsewhere (archi-frontend --store with a standalone coordinator that has a
// token): the store guard lets it do what the in-process frontend does.
std::string FrontendStoreCredential(const std::string& token, const std::string& pipeline);

// The token from --token or, when that is empty, the ARCHI_TOKEN environment variable.
std::string TokenFromFlagOrEnv(const std::string& flag);

// TLS through gRPC's SSL credentials (PEM files). All empty: plaintext (insecure credentials).
//   server: cert + key (required together); ca: verify client certificates against it and
//           require one (mutual TLS).
//   client: ca: verify the server against it (empty: the system roots); cert + key: present a
//           client certificate (mutual TLS).
struct TlsFiles {
  std::string cert, key, ca;
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};
// kInvalidArgument for a cert without key (or the reverse), kNotFound naming an unreadable file.
Result<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls);
Result<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& tls);

}  // namespace archi::coordinator
