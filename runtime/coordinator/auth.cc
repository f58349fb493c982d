#include "runtime/coordinator/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace archi::coordinator {

grpc::Status CheckToken(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                        const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  auto it = metadata.find(kAuthMetadata);
  if (it == metadata.end()) {
    return {grpc::StatusCode::UNAUTHENTICATED, "missing authorization metadata (a token)"};
  }
  const std::string want = "Bearer " + token;
  const grpc::string_ref got = it->second;
  // Constant time in the length of what we expect.
  unsigned diff = got.size() == want.size() ? 0u : 1u;
  for (size_t i = 0; i < want.size(); ++i) {
    const char c = i < got.size() ? got.data()[i] : '\0';
    diff |= static_cast<unsigned>(static_cast<unsigned char>(c) ^
                                  static_cast<unsigned char>(want[i]));
  }
  if (diff != 0) return {grpc::StatusCode::UNAUTHENTICATED, "wrong token"};
  return grpc::Status::OK;
}

void AddToken(grpc::ClientContext& ctx, const std::string& token) {
  if (!token.empty()) ctx.AddMetadata(kAuthMetadata, "Bearer " + token);
}

std::string HmacSha256Hex(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    hex += kHex[out[i] >> 4];
    hex += kHex[out[i] & 15];
  }
  return hex;
}

std::string MemberSecret(const std::string& token, const std::string& pipeline) {
  return HmacSha256Hex(token, "archi-member/" + pipeline);
}

std::string FrontendStoreCredential(const std::string& token, const std::string& pipeline) {
  return "frontend:" + HmacSha256Hex(MemberSecret(token, pipeline), "frontend");
}

std::string TokenFromFlagOrEnv(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("ARCHI_TOKEN");
  return env ? std::string(env) : std::string();
}

namespace {
Result<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream f(path);
  if (!f) return NotFoundError(std::string("cannot read TLS ") + what + " file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().find("-----BEGIN") == std::string::npos) {
    return InvalidArgumentError(std::string("TLS ") + what + " file '" + path +
                                "' is not PEM (no -----BEGIN line)");
  }
  return ss.str();
}
}  // namespace

Result<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert.empty() || tls.key.empty()) {
    return InvalidArgumentError("a TLS server needs both a certificate and a key");
  }
  grpc::SslServerCredentialsOptions o(tls.ca.empty()
                                          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ARCHI_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert, "certificate"));
  ARCHI_ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key, "key"));
  o.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.ca.empty()) {
    ARCHI_ASSIGN_OR_RETURN(o.pem_root_certs, ReadPem(tls.ca, "client CA"));
  }
  return grpc::SslServerCredentials(o);
}

Result<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  if (tls.cert.empty() != tls.key.empty()) {
    return InvalidArgumentError("a TLS client certificate needs its key (and the reverse)");
  }
  grpc::SslCredentialsOptions o;
  if (!tls.ca.empty()) {
    ARCHI_ASSIGN_OR_RETURN(o.pem_root_certs, ReadPem(tls.ca, "CA"));
  }
  if (!tls.cert.empty()) {
    ARCHI_ASSIGN_OR_RETURN(o.pem_cert_chain, ReadPem(tls.cert, "certificate"));
    ARCHI_ASSIGN_OR_RETURN(o.pem_private_key, ReadPem(tls.key, "key"));
  }
  return grpc::SslCredentials(o);
}

}  // namespace archi::coordinator
