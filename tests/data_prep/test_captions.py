"""Caption -> fields: rule-based parser on hand-written MedTrinity-style captions, and the LLM path."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from data_prep.captions import FIELD_NAMES, CaptionFields, is_normal_finding, normalize_modality, parse_caption
from data_prep.llm_extract import LlmExtractor, _endpoint
from tests.conftest import ROOT, free_port
from tests.fake_openai import FakeServer, completion

CT_BRAIN = (
    "The image is a non-contrasted computed tomography (CT) scan of the brain, showing the cerebral "
    "hemispheres with clear visualization of the brain's midline structures. The region of interest, "
    "located centrally within the brain, occupies approximately 4.1% of the image area and appears to be "
    "an area of abnormal density, potentially indicative of a lesion or pathological change. This region "
    "is situated adjacent to the ventricles, which may suggest a relationship with the ventricular system "
    "or surrounding brain tissue. The abnormal density in this area could be related to a space-occupying "
    "lesion, such as a tumor or hemorrhage, which might be exerting a mass effect on the adjacent structures."
)

# caption -> every expected field (None where the caption is silent)
CASES = [
    (CT_BRAIN, dict(
        modality="CT", organ="brain", roi_location="central", roi_area_pct=4.1,
        texture="area of abnormal density", relation="adjacent to the ventricles",
        diagnosis="space-occupying lesion, such as a tumor or hemorrhage, which might be exerting a mass "
                  "effect on the adjacent structures")),
    ("This is a hematoxylin and eosin stained histopathology image of breast tissue. The region of interest "
     "is located in the upper left region of the image and occupies roughly 12.5% of the area. It shows "
     "densely packed atypical cells with hyperchromatic nuclei and scant cytoplasm. The cells appear to "
     "infiltrate the surrounding fibrous stroma. These features are suggestive of invasive ductal carcinoma.",
     dict(modality="pathology", organ="breast", roi_location="upper left region", roi_area_pct=12.5,
          texture="densely packed atypical cells with hyperchromatic nuclei and scant cytoplasm",
          relation="infiltrate the surrounding fibrous stroma", diagnosis="invasive ductal carcinoma")),
    ("The image is a chest X-ray (posteroanterior view) showing the lungs, heart, and surrounding "
     "structures. The left-center region, occupying about 3% of the image, shows an area of increased "
     "opacity in the left lower lobe. This opacity is adjacent to the left heart border. The findings are "
     "consistent with left lower lobe pneumonia.",
     dict(modality="X-ray", organ="chest", roi_location="left-center region", roi_area_pct=3.0,
          texture="area of increased opacity in the left lower lobe",
          relation="adjacent to the left heart border", diagnosis="left lower lobe pneumonia")),
    ("An MRI of the knee in the sagittal plane. The region of interest is situated in the lower right "
     "quadrant of the image, covering approximately 6.2% of the image area. Within this region, there is a "
     "hyperintense signal on T2-weighted imaging involving the posterior horn of the medial meniscus. This "
     "signal abnormality likely represents a meniscal tear.",
     dict(modality="MR", organ="knee", roi_location="lower right quadrant", roi_area_pct=6.2,
          texture="hyperintense signal on T2-weighted imaging",
          relation="involving the posterior horn of the medial meniscus", diagnosis="meniscal tear")),
    ("This ultrasound image of the liver shows a well-defined hypoechoic lesion in the right lobe. The "
     "lesion, located in the upper right region of the image, takes up about 8 percent of the image. It is "
     "surrounded by normal hepatic parenchyma. Its appearance may represent a hepatic cyst or hemangioma.",
     dict(modality="ultrasound", organ="liver", roi_location="upper right region", roi_area_pct=8.0,
          texture="well-defined hypoechoic lesion in the right lobe",
          relation="surrounded by normal hepatic parenchyma", diagnosis="hepatic cyst or hemangioma")),
    ("Fundus photograph of the left eye showing the optic disc and macula. The highlighted area near the "
     "center of the image contains multiple yellowish deposits. These drusen-like deposits are "
     "characteristic of age-related macular degeneration.",
     dict(modality="fundus", organ="eye", roi_location="central", roi_area_pct=None,
          texture="multiple yellowish deposits", relation=None,
          diagnosis="age-related macular degeneration")),
    ("Dermoscopy image of a pigmented skin lesion with an irregular network and blue-white veil.",
     dict(modality="dermoscopy", organ="skin", roi_location=None, roi_area_pct=None,
          texture="pigmented skin lesion with an irregular network and blue-white veil",
          relation=None, diagnosis=None)),
    ("Endoscopic view of the colon. In the lower-left region of the image, occupying approximately 15.3% of "
     "the area, there is a reddish, ulcerated mucosal surface with irregular margins. The lesion appears to "
     "extend into the surrounding mucosa. This may indicate ulcerative colitis or a neoplastic process.",
     dict(modality="endoscopy", organ="colon", roi_location="lower-left region", roi_area_pct=15.3,
          texture="reddish, ulcerated mucosal surface with irregular margins",
          relation="extend into the surrounding mucosa",
          diagnosis="ulcerative colitis or a neoplastic process")),
    ("PET/CT image of the thorax demonstrating intense FDG uptake in a right hilar mass, suspicious for "
     "malignancy.",
     dict(modality="PET", organ="chest", roi_location=None, roi_area_pct=None,
          texture="intense FDG uptake in a right hilar mass", relation=None, diagnosis="malignancy")),
    # the bundled sample's phrasing: "there is ... more opaque", "It lies in", "Possible explanations include"
    ("The image is a posteroanterior chest radiograph showing both lungs and the cardiac silhouette. Within "
     "the highlighted box in the lower left region of the image, which occupies approximately 3.7% of the "
     "image area, there is clustered soft-tissue nodules that are more opaque than the lung. It lies in the "
     "lower zone of the lung above the hemidiaphragm. Possible explanations include multiple lung nodules "
     "such as metastatic disease or granulomas; clinical correlation is advised.",
     dict(modality="X-ray", organ="chest", roi_location="lower left region", roi_area_pct=3.7,
          texture="clustered soft-tissue nodules that are more opaque than the lung",
          relation="in the lower zone of the lung above the hemidiaphragm",
          diagnosis="multiple lung nodules such as metastatic disease or granulomas")),
    ("This is an echocardiographic ultrasound image of the heart in an apical view, showing the ventricles, "
     "the atria and the atrioventricular valves. The region of interest, located centrally within the image, "
     "occupies approximately 7.4% of the image area and appears to be an enlarged echo-free atrial chamber. "
     "The marked area is found below the mitral valve, behind the left ventricle. These features may be "
     "indicative of left atrial enlargement from mitral valve disease.",
     dict(modality="ultrasound", organ="heart", roi_location="central", roi_area_pct=7.4,
          texture="enlarged echo-free atrial chamber", relation="below the mitral valve",
          diagnosis="left atrial enlargement from mitral valve disease")),
    ("The image is a CT scan of the chest with no focal abnormality.",  # a normal image
     dict(modality="CT", organ="chest", roi_location=None, roi_area_pct=None, texture=None, relation=None,
          diagnosis="no focal abnormality")),
    # the convert tests' synthetic template: the texture ends where the relation begins
    ("The image is a MRI scan of the brain. The region of interest is located in the upper left region and "
     "occupies approximately 3.1% of the image area. It appears hyperintense on T2-weighted images and is "
     "adjacent to the surrounding tissue. These findings are suggestive of a neoplastic lesion.",
     dict(modality="MR", organ="brain", roi_location="upper left region", roi_area_pct=3.1,
          texture="hyperintense on T2-weighted images", relation="adjacent to the surrounding tissue",
          diagnosis="neoplastic lesion")),
    ("A fundus photograph.",  # modality only; the organ follows from the modality
     dict(modality="fundus", organ="retina", roi_location=None, roi_area_pct=None, texture=None,
          relation=None, diagnosis=None)),
    ("Axial CT of the lumbar spine. The ROI on the left side of the image, about 2.5 % of the image, shows "
     "a hypodense area.",
     dict(modality="CT", organ="lumbar spine", roi_location="left side", roi_area_pct=2.5,
          texture="hypodense area", relation=None, diagnosis=None)),
]


@pytest.mark.parametrize("caption,expected", CASES, ids=[e["modality"] or "none" for _, e in CASES])
def test_parse_caption_fields(caption: str, expected: dict) -> None:
    assert parse_caption(caption).as_dict() == expected


@pytest.mark.parametrize("text", ["", "   ", "\n", "Image 3 of 12."])
def test_parse_caption_without_content(text: str) -> None:
    assert parse_caption(text) == CaptionFields()


def test_hypothesis_about_anatomy_is_not_the_diagnosis() -> None:
    caption = ("Brain MRI. The region of interest lies in the right hemisphere near the ventricle, which may "
               "suggest a relationship with the ventricular system.")
    assert parse_caption(caption).diagnosis is None


@pytest.mark.parametrize("text,normal", [
    ("no focal abnormality", True), ("No acute findings.", True), ("within normal limits", True),
    ("normal study", True), ("no focal abnormality in the left lobe", False), ("meniscal tear", False),
    (None, False), ("", False),
])
def test_is_normal_finding(text: str | None, normal: bool) -> None:
    assert is_normal_finding(text) is normal


def test_percent_needs_an_area_context() -> None:
    caption = ("Histopathology image of colon tissue. Immunostaining shows a Ki-67 index of 40%. The region "
               "of interest occupies about 7% of the image.")
    assert parse_caption(caption).roi_area_pct == 7.0


def test_filled_and_as_dict() -> None:
    fields = parse_caption(CASES[6][0])
    assert list(fields.as_dict()) == list(FIELD_NAMES)
    assert fields.filled() == {"modality": True, "organ": True, "roi_location": False, "roi_area_pct": False,
                               "texture": True, "relation": False, "diagnosis": False}


def test_deterministic() -> None:
    """The same fields in another process with another hash seed (set and dict order, module state)."""
    script = ("import dataclasses, json, sys; from data_prep.captions import parse_caption; "
              "print(json.dumps([dataclasses.asdict(parse_caption(c)) for c in json.load(sys.stdin)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    other = subprocess.run([sys.executable, "-c", script], input=json.dumps([c for c, _ in CASES]), env=env,
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert [parse_caption(c) for c, _ in CASES] == [CaptionFields(**f) for f in json.loads(other)]


@pytest.mark.parametrize("text,modality", [
    ("Computed Tomography", "CT"), ("MRI", "MR"), ("T2-weighted", "MR"), ("chest radiograph", "X-ray"),
    ("H&E slide", "pathology"), ("sonography", "ultrasound"), ("PET-CT", "PET"), ("colonoscopy", "endoscopy"),
    ("dermatoscopic photo", "dermoscopy"), ("a photo", None), (None, None),
])
def test_normalize_modality(text: str | None, modality: str | None) -> None:
    assert normalize_modality(text) == modality


# --- LlmExtractor against a local OpenAI-style server ---------------------------------------------

def _reply(reply: tuple[int, str]) -> tuple[int, dict]:
    status, content = reply
    return (status, {"error": {"message": "boom"}}) if status != 200 else completion(content)


@pytest.fixture
def server():
    srv = FakeServer(lambda payload: _reply(srv.reply), model_id="served-model")
    srv.reply = (200, "")
    yield srv
    srv.close()


ANSWER = {"modality": "Computed Tomography", "organ": "Brain", "roi_location": "central",
          "roi_area_pct": "4.1%", "texture": "area of abnormal density", "relation": None,
          "diagnosis": "space-occupying lesion"}
EXPECTED = CaptionFields(modality="CT", organ="brain", roi_location="central", roi_area_pct=4.1,
                         texture="area of abnormal density", relation=None, diagnosis="space-occupying lesion")


def test_llm_valid_json(server) -> None:
    server.reply = (200, json.dumps(ANSWER))
    ex = LlmExtractor(server.url, model="m", api_key="secret")
    assert ex(CT_BRAIN) == EXPECTED
    assert (ex.calls, ex.answered, sum(ex.fallbacks.values())) == (1, 1, 0)
    method, path, headers, payload = server.requests[-1]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert headers["Authorization"] == "Bearer secret"
    assert payload["model"] == "m" and payload["messages"][-1] == {"role": "user", "content": CT_BRAIN}


def test_llm_json_in_fences_and_model_discovery(server) -> None:
    server.reply = (200, "Here you go:\n```json\n" + json.dumps(ANSWER, indent=2) + "\n```")
    ex = LlmExtractor(server.url + "/v1")
    assert ex(CT_BRAIN) == EXPECTED
    assert ex.model == "served-model"
    assert [r[:2] for r in server.requests] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    assert server.requests[-1][3]["model"] == "served-model"


@pytest.mark.parametrize("reply,reason", [
    ((200, "I am sorry, I cannot extract fields."), "no_json"),
    ((200, "{modality: CT,"), "no_json"),
    ((200, '{"modality": "CT", "organ": 3}'), "bad_organ"),
    ((200, json.dumps({**ANSWER, "roi_area_pct": 250})), "bad_roi_area_pct"),
    ((200, '{"answer": "CT"}'), "no_fields"),
    ((500, ""), "http_500"),
])
def test_llm_fallback_counted(server, reply, reason: str) -> None:
    server.reply = reply
    ex = LlmExtractor(server.url + "/v1/chat/completions", model="m")
    assert ex(CT_BRAIN) == parse_caption(CT_BRAIN)
    assert ex(CT_BRAIN) == parse_caption(CT_BRAIN)
    assert dict(ex.fallbacks) == {reason: 2}
    assert (ex.calls, ex.answered) == (2, 0)


def test_llm_unreachable_falls_back() -> None:
    ex = LlmExtractor(f"http://127.0.0.1:{free_port()}", model="m", timeout=2)
    assert ex(CT_BRAIN) == parse_caption(CT_BRAIN)
    assert dict(ex.fallbacks) == {"unreachable": 1}


@pytest.mark.parametrize("url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1",
                                 "http://h:8000/v1/chat/completions"])
def test_endpoint_forms(url: str) -> None:
    assert _endpoint(url) == ("http://h:8000/v1/chat/completions", "http://h:8000/v1/models")
