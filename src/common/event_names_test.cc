// Tests of the SSIS event names in common/event_names.cc: EventName and ParseEventName, which
// the package loader and the catalog share.
#include <gtest/gtest.h>

#include <string>

#include "fanout/event.h"

namespace fanout {
namespace {

constexpr EventType kAllTypes[] = {EventType::kOnPreExecute,  EventType::kOnPostExecute,
                                   EventType::kOnError,       EventType::kOnWarning,
                                   EventType::kOnInformation, EventType::kOnTaskFailed,
                                   EventType::kOnProgress,    EventType::kOnVariableValueChanged};

TEST(EventNameTest, RoundTripsEveryType) {
  for (EventType type : kAllTypes) {
    auto parsed = ParseEventName(EventName(type));
    ASSERT_TRUE(parsed.ok()) << EventName(type);
    EXPECT_EQ(*parsed, type);
  }
  EXPECT_STREQ(EventName(EventType::kOnPreExecute), "OnPreExecute");
  EXPECT_STREQ(EventName(EventType::kOnVariableValueChanged), "OnVariableValueChanged");
}

TEST(EventNameTest, ParsesIgnoringCaseAndRejectsUnknown) {
  auto parsed = ParseEventName("onerror");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, EventType::kOnError);
  auto upper = ParseEventName("ONTASKFAILED");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(*upper, EventType::kOnTaskFailed);
  auto bad = ParseEventName("OnExplode");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'OnExplode'"), std::string::npos);
  EXPECT_NE(bad.status().message().find("OnPreExecute"), std::string::npos)
      << "the message lists the known events: " << bad.status().message();
}

TEST(EventNameTest, RejectsPrefixesAndEmpty) {
  for (const char* name : {"", "On", "OnErr", "OnErrorX", " OnError"}) {
    EXPECT_FALSE(ParseEventName(name).ok()) << "'" << name << "'";
  }
}

TEST(EventNameTest, UnknownTypeHasAName) {
  EXPECT_STREQ(EventName(static_cast<EventType>(999)), "Unknown");
}

}  // namespace
}  // namespace fanout
