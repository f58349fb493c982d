#include "runtime/coordinator/auth.h"

#include <cstdlib>

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

std::string TokenFromFlagOrEnv(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("ARCHI_TOKEN");
  return env ? std::string(env) : std::string();
}

}  // namespace archi::coordinator
