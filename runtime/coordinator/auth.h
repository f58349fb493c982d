// Shared-token authentication of coordinator RPCs: the client sends the metadata
// "authorization: Bearer <token>"; the server compares it in constant time. An empty server token
// accepts everyone (the coordinator logs a warning at start).
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>

namespace archi::coordinator {

inline constexpr char kAuthMetadata[] = "authorization";

// OK, or UNAUTHENTICATED naming what was wrong (missing or wrong token; never the token).
grpc::Status CheckToken(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                        const std::string& token);

// Adds the token to a client call (nothing when `token` is empty).
void AddToken(grpc::ClientContext& ctx, const std::string& token);

// The token from --token or, when that is empty, the ARCHI_TOKEN environment variable.
std::string TokenFromFlagOrEnv(const std::string& flag);

}  // namespace archi::coordinator
