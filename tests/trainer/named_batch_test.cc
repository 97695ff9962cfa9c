// Named-tensor samples and batches (issue 16): the default collator pads each field as
// Hugging Face's padding collators do, the old two-tensor spelling keeps its meaning,
// label_names picks the label entry, and run_name reaches the jsonl and TensorBoard logs.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <fstream>

#include "cohort/dist/error.h"
#include "cohort/trainer/data.h"
#include "cohort/trainer/reporting.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;

at::Tensor ids(std::vector<std::int64_t> v) { return at::tensor(v, at::kLong); }

// A tokenised example as HF's tokenizer returns it (no padding), labels = input_ids.
Sample tokenised(std::vector<std::int64_t> v) {
  Sample s;
  s.set("input_ids", ids(v));
  s.set("attention_mask", at::ones({static_cast<std::int64_t>(v.size())}, at::kLong));
  s.set("labels", ids(v));
  s.set("token_type_ids", at::ones({static_cast<std::int64_t>(v.size())}, at::kLong));
  return s;
}

// Uneven lengths: every field is right-padded to the longest, labels with -100 and
// attention_mask with 0 (HF's DataCollatorForSeq2Seq / DataCollatorWithPadding), others
// with their pad value; the expected rows are written out by hand.
TEST(UnitNamedBatch, UnevenLengthsArePaddedPerFieldAsHuggingFacePads) {
  const std::vector<Sample> samples{tokenised({5, 6, 7}), tokenised({8, 9, 10, 11, 12}),
                                    tokenised({13})};
  const Batch b = makePaddingCollator({{"input_ids", 3}, {"token_type_ids", 2}})(samples);
  ASSERT_EQ(b.size, 3);
  EXPECT_TRUE(at::equal(b.get("input_ids"),
                        at::tensor({5, 6, 7, 3, 3, 8, 9, 10, 11, 12, 13, 3, 3, 3, 3}, at::kLong)
                            .reshape({3, 5})));
  EXPECT_TRUE(at::equal(
      b.get("labels"),
      at::tensor({5, 6, 7, -100, -100, 8, 9, 10, 11, 12, 13, -100, -100, -100, -100}, at::kLong)
          .reshape({3, 5})));
  EXPECT_TRUE(at::equal(b.get("attention_mask"),
                        at::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}, at::kLong)
                            .reshape({3, 5})));
  EXPECT_TRUE(at::equal(b.get("token_type_ids"),
                        at::tensor({1, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2}, at::kLong)
                            .reshape({3, 5})));
  // The default pad values: input_ids and other fields 0.
  const Batch d = defaultCollate(samples);
  EXPECT_EQ(d.get("input_ids")[2][1].item<std::int64_t>(), 0);
  EXPECT_EQ(d.get("token_type_ids")[0][4].item<std::int64_t>(), 0);
  EXPECT_EQ(d.get("labels")[0][4].item<std::int64_t>(), -100);
  EXPECT_EQ(d.get("attention_mask")[0][4].item<std::int64_t>(), 0);
  EXPECT_EQ(d.names(), (std::vector<std::string>{"input_ids", "labels", "attention_mask",
                                                 "token_type_ids"}));
}

// The members ARE the named tensors: Sample{input, labels} and batch.input / batch.labels
// mean what they meant before names existed.
TEST(UnitNamedBatch, TwoTensorSpellingIsTheNamedOne) {
  const Sample s{ids({1, 2}), ids({2, 3})};
  EXPECT_EQ(s.names(), (std::vector<std::string>{"input_ids", "labels"}));
  EXPECT_TRUE(at::equal(s.get("input_ids"), s.input));
  const Batch b = defaultCollate({s, Sample{ids({4}), ids({5})}});
  EXPECT_TRUE(at::equal(b.input, at::tensor({1, 2, 4, 0}, at::kLong).reshape({2, 2})));
  EXPECT_TRUE(at::equal(b.labels, at::tensor({2, 3, 5, -100}, at::kLong).reshape({2, 2})));
  EXPECT_TRUE(b.fields.empty());
  Batch named;
  named.set("input_ids", ids({7}));
  named.set("pixel_mask", ids({1}));
  EXPECT_TRUE(at::equal(named.input, ids({7})));
  EXPECT_TRUE(named.has("pixel_mask"));
  named.set("pixel_mask", at::Tensor());
  EXPECT_FALSE(named.has("pixel_mask"));
}

TEST(UnitNamedBatch, SamplesWithDifferentNamesAreAConfigError) {
  Sample a = tokenised({1, 2});
  Sample b = tokenised({3});
  b.fields.erase("attention_mask");
  try {
    defaultCollate({a, b});
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'attention_mask'"), std::string::npos) << e.what();
  }
}

// label_names: a field under another name becomes the labels (padded with -100, counted),
// and the batch still answers to that name.
TEST(UnitNamedBatch, LabelNamesMovesTheFieldIntoLabels) {
  Sample a{ids({1, 2, 3}), {}}, b{ids({4}), {}};
  a.set("target", ids({2, 3, 4}));
  b.set("target", ids({5}));
  const Batch batch = withLabelName(nullptr, "target")({a, b});
  EXPECT_EQ(batch.labelsName, "target");
  EXPECT_TRUE(at::equal(batch.labels, at::tensor({2, 3, 4, 5, -100, -100}, at::kLong).reshape({2, 3})));
  EXPECT_TRUE(at::equal(batch.get("target"), batch.labels));
  EXPECT_EQ(batch.fields.count("target"), 0u);
  EXPECT_THROW(withLabelName(nullptr, "answer")({a, b}), ConfigError);
}

// A tiny next-token model: logits = embed[input] (vocabulary 8, embedding is the logits).
struct TinyLm : torch::nn::Module {
  TinyLm() {
    at::manual_seed(3);
    w = register_parameter("w", at::randn({8, 8}, at::kDouble));
  }
  at::Tensor w;
};

// Samples of uneven length whose labels live under `labelField` (nothing else differs).
class NamedLabelsDataset : public Dataset {
 public:
  explicit NamedLabelsDataset(std::string labelField) : field_(std::move(labelField)) {}
  std::int64_t size() const override { return 24; }
  Sample get(std::int64_t i) const override {
    const std::int64_t len = 2 + i % 4;
    at::Tensor x = at::arange(i, i + len, at::kLong).remainder(8);
    Sample s;
    s.input = x;
    s.set("attention_mask", at::ones({len}, at::kLong));
    s.set(field_, x.roll(-1));
    return s;
  }

 private:
  std::string field_;
};

std::vector<double> trainTiny(dist::Communicator& comm, const std::string& labelField,
                              const std::string& dir, const std::string& runName) {
  TrainingArguments a;
  a.set_output_dir(dir);
  a.set_per_device_train_batch_size(12 / comm.size());
  a.set_max_steps(4);
  a.set_learning_rate(0.05);
  a.set_save_strategy("no");
  a.set_logging_steps(1);
  a.add_report_to("jsonl");
  if (labelField != "labels") a.add_label_names(labelField);
  if (!runName.empty()) a.set_run_name(runName);
  auto m = std::make_shared<TinyLm>();
  TrainerParts p;
  p.model = m;
  p.forward = [m](const Batch& b) {
    // The mask reaches the model: padded positions are zeroed (their labels are -100).
    return ModelOutput{at::embedding(m->w, b.input) * b.get("attention_mask").unsqueeze(-1), {}};
  };
  p.trainDataset = std::make_shared<NamedLabelsDataset>(labelField);
  Trainer t(a, comm, p);
  t.train();
  const at::Tensor w = m->w.detach().reshape({-1});
  return std::vector<double>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
}

TEST(TrainerNamedBatch, LabelNamesAndRunName) {
  auto comm = worldComm();
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("cohort_named_" + std::to_string(comm->size())))
                              .string();
  if (comm->rank() == 0) std::filesystem::remove_all(dir);
  comm->barrier();
  const std::vector<double> plain = trainTiny(*comm, "labels", dir + "/plain", "");
  const std::vector<double> named = trainTiny(*comm, "next_token", dir + "/named", "tiny run");
  const at::Tensor w0 = TinyLm().w.reshape({-1});
  const std::vector<double> initial(w0.data_ptr<double>(), w0.data_ptr<double>() + w0.numel());
  const bool ok = plain == named && plain != initial;
  EXPECT_TRUE(allRanks(ok)) << "label_names=next_token must train exactly as labels";
  if (comm->rank() == 0) {
    std::ifstream f(dir + "/named/log_history.jsonl");
    std::string line;
    int lines = 0;
    while (std::getline(f, line)) {
      ++lines;
      EXPECT_NE(line.find("\"run_name\": \"tiny run\""), std::string::npos) << line;
    }
    EXPECT_GT(lines, 1);
    std::ifstream g(dir + "/plain/log_history.jsonl");
    std::getline(g, line);
    EXPECT_EQ(line.find("run_name"), std::string::npos) << "unset run_name adds nothing";
  }
}

}  // namespace
}  // namespace cohort::test
